from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, PasswordField, SelectField, StringField, SubmitField
from wtforms.validators import AnyOf, DataRequired, Length, NumberRange, Optional, Regexp

from ..auth.forms import acceptable_password
from ..models import ROLES, USERNAME_PATTERN

USERNAME = [
    DataRequired(),
    Length(min=2, max=64),
    Regexp(USERNAME_PATTERN, message="Letters, digits, dots, dashes and underscores only."),
]
PASSWORD = [DataRequired(), acceptable_password]


class CreateUserForm(FlaskForm):
    username = StringField("Username", validators=USERNAME)
    role = SelectField("Role", choices=[(r, r.title()) for r in ROLES])
    password = PasswordField("Initial password", validators=PASSWORD, render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Create user")


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=PASSWORD, render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Reset password")


class SetActiveForm(FlaskForm):
    # The state the button asks for, not "the other one": a double-click on Deactivate (the second
    # POST arriving after the first is saved) turned the account back on.
    active = HiddenField(validators=[AnyOf(("0", "1"), message="Reload the Users page and try again.")])


class IssueTokenForm(FlaskForm):
    # A new value each time the page is drawn, kept with the token it issues: the form sent again (a
    # reload of the page that shows the secret, a double-click) issues nothing (ApiToken.form_once).
    once = HiddenField(validators=[DataRequired("Reload the page and issue the token again."), Length(max=64)])
    name = StringField("Token name", validators=[Optional(), Length(max=64)])
    days = IntegerField("Valid for (days)", validators=[Optional(), NumberRange(min=1, max=3650)])
    submit = SubmitField("Issue token")
