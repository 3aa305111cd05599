from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import SelectField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length

from ..models import FEEDBACK_LABELS

ACCEPTED_EXTENSIONS = ".jpg,.jpeg,.png,.bmp,.tif,.tiff,.webp,.dcm,.dicom"


class UploadForm(FlaskForm):
    files = MultipleFileField(
        "Chest radiographs",
        validators=[DataRequired("Choose at least one file.")],
        render_kw={"accept": ACCEPTED_EXTENSIONS + ",image/*,application/dicom"},
    )
    submit = SubmitField("Screen")


class FeedbackForm(FlaskForm):
    # No reading is chosen for the radiologist where the model has none (UNKNOWN): the blank choice
    # must be changed, so one click cannot record an adult's chest film as "Not a chest radiograph".
    label = SelectField(
        "Radiologist's reading",
        choices=[("", "Choose your reading")] + list(FEEDBACK_LABELS.items()),
        validators=[InputRequired("Choose your reading.")],
    )
    comment = TextAreaField("Comment (optional)", validators=[Length(max=2000)])
    submit = SubmitField("Save review")
