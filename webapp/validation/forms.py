from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, FloatField, StringField, SubmitField
from wtforms.validators import DataRequired, InputRequired, Length


class UploadArchiveForm(FlaskForm):
    archive = FileField("Labelled archive (ZIP)", validators=[FileRequired("Choose a ZIP file.")])
    submit = SubmitField("Start validation run")


class AdoptThresholdForm(FlaskForm):
    # The range is adopt()'s rule (strictly between 0 and 1), as for the API: a narrower one here
    # refused proposed operating points below 0.001 or above 0.999 that the report offered to adopt.
    threshold = FloatField("Threshold", validators=[InputRequired()])
    # Counted without the spaces around it, which are not kept: "  abcd  " passed as 8 characters and
    # was saved as the 4-character reason "abcd".
    reason = StringField(
        "Reason",
        filters=[lambda text: text.strip() if isinstance(text, str) else text],
        validators=[DataRequired(), Length(min=5, max=500, message="The reason needs 5 to 500 characters.")],
    )
    submit = SubmitField("Adopt as the site threshold")


class WithdrawForm(FlaskForm):
    submit = SubmitField("Withdraw the site threshold")


class CancelRunForm(FlaskForm):
    submit = SubmitField("Cancel this run")


class DeleteRunForm(FlaskForm):
    # A tick as well as the button: deleting cannot be undone, and a stray click must not do it.
    confirm = BooleanField(
        "I have finished reviewing this run: delete it, its films' names, review copies and figures for good",
        validators=[DataRequired("Tick the box to confirm the deletion.")],
    )
    submit = SubmitField("Delete this run")


class RedactRunForm(FlaskForm):
    # A tick as well as the button, as for deleting: the names and pictures cannot be brought back.
    # Its own field name: on the report page beside the delete form, "confirm" would be two elements' id.
    confirm_redaction = BooleanField(
        "I have finished reviewing this run's films: remove their names, review copies and heat maps for good",
        validators=[DataRequired("Tick the box to confirm the redaction.")],
    )
    submit = SubmitField("Remove names and pictures")
