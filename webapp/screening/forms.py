from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import SelectField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length

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
    label = SelectField("Radiologist's reading", choices=list(FEEDBACK_LABELS.items()))
    comment = TextAreaField("Comment (optional)", validators=[Length(max=2000)])
    submit = SubmitField("Save review")
