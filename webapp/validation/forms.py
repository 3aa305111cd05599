from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import FloatField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, NumberRange


class UploadArchiveForm(FlaskForm):
    archive = FileField("Labelled archive (ZIP)", validators=[FileRequired("Choose a ZIP file.")])
    submit = SubmitField("Start validation run")


class AdoptThresholdForm(FlaskForm):
    threshold = FloatField("Threshold", validators=[DataRequired(), NumberRange(min=0.001, max=0.999)])
    reason = StringField("Reason", validators=[DataRequired(), Length(min=5, max=500)])
    submit = SubmitField("Adopt as the site threshold")


class WithdrawForm(FlaskForm):
    submit = SubmitField("Withdraw the site threshold")


class CancelRunForm(FlaskForm):
    submit = SubmitField("Cancel this run")
