from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, SubmitField
from wtforms.validators import InputRequired

from ..models import THEMES

THEME_NAMES = {"system": "As the system", "light": "Light", "dark": "Dark (reading room)"}


class ThemeForm(FlaskForm):
    theme = SelectField("Theme", choices=[(t, THEME_NAMES[t]) for t in THEMES], validators=[InputRequired()])
    back = HiddenField()
    submit = SubmitField("Apply")
