"""Database tables. Typed SQLAlchemy 2.0 models."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from datetime import UTC, datetime, timedelta

from flask import current_app, g, has_request_context, request
from flask_login import UserMixin, current_user
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, contains_eager, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value

from .extensions import db
from .inference.labels import NORMAL, PNEUMONIA, VERDICTS
from .passwords import hash_password, verify_password

ROLES = ("clinician", "admin")
# Where an account's password is checked: here (Argon2 hash) or in the staff directory (LDAP).
LOCAL, DIRECTORY = "local", "directory"
# Stored instead of a hash for directory accounts: no password ever verifies against it.
NO_LOCAL_PASSWORD = "!directory"


def directory_configured() -> bool:
    """Whether directory sign-in is switched on (LDAP_URL set)."""
    return bool(current_app.config["LDAP_URL"])


# "system" follows the browser's prefers-color-scheme; the others pin the reading-room theme.
THEMES = ("system", "light", "dark")
LABELS = VERDICTS
FEEDBACK_LABELS = {NORMAL: "Normal", PNEUMONIA: "Pneumonia", "NOT_CXR": "Not a chest radiograph"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time we store is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z: the API's times and the CSV export's, whatever the database."""
    return as_utc(moment).astimezone(UTC).isoformat().replace("+00:00", "Z")


# Local account names (directory names are the directory's own; see auth/directory.py).
USERNAME_PATTERN = r"^[A-Za-z0-9._-]{2,64}$"


def folded_username(username: str) -> str:
    """A user name as names are compared: compatibility forms (full-width letters) and case folded."""
    return unicodedata.normalize("NFKC", username).strip().lower()


def changed_if(row: db.Model, condition, **values) -> bool:
    """Write `values` to `row` in the database only where `condition` still holds there; whether it did.
    Of two requests that both read the row before either wrote (a double-click, two administrators, a
    page beside the shell), one changes it and the other learns it came second: the one that changed it
    audits and says so. On success the loaded row shows the values without another query."""
    model = type(row)
    changed = db.session.execute(
        update(model).where(model.id == row.id, condition).values(**values).execution_options(synchronize_session=False)
    ).rowcount
    if changed:
        for name, value in values.items():
            set_committed_value(row, name, value)  # what the row now holds, not a change to write
    return bool(changed)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="clinician")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    theme: Mapped[str] = mapped_column(String(8), default="system", server_default="system")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default=LOCAL, server_default=LOCAL)
    # Sessions carry the version they started under; raising it ends every session at once.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set when an administrator chose the password: its owner must replace it before anything else.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A directory account: whether the directory gave it a role at its last check (sign-in, or the
    # periodic re-check in auth/recheck.py, which ends a leaver's access once and only once).
    directory_access: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # A directory account: the entry's objectGUID / entryUUID (auth/directory.py, entry_identity), so
    # that another person given the same name (a reused sAMAccountName, another directory) is refused
    # instead of signing in to this account. None: not known yet, or the directory hides it.
    directory_entry_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")

    @property
    def is_active(self) -> bool:  # Flask-Login refuses sessions of deactivated users
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @hybrid_property
    def may_use_tokens(self) -> bool:
        """Whether the account's API tokens are honoured: active and, from the directory, not a leaver
        (a leaver's tokens were revoked, and one issued since must not bring the access back) and not
        cut off (directory sign-in switched off)."""
        return self.active and self.directory_access and not self.cut_off

    @may_use_tokens.inplace.expression
    @classmethod
    def _may_use_tokens_expression(cls):
        directory_on = or_(cls.source != DIRECTORY, literal(directory_configured()))
        return and_(cls.active.is_(True), cls.directory_access.is_(True), directory_on)

    @property
    def from_directory(self) -> bool:
        return self.source == DIRECTORY

    @property
    def cut_off(self) -> bool:
        """A directory account while directory sign-in is switched off: its password and role come from
        the directory, which nothing asks any more (not the sign-in, not the re-check), so a leaver would
        keep the sessions and tokens they had. It has no access at all (fail closed) until directory
        sign-in is on again or an administrator makes it local (`users make-local`)."""
        return self.from_directory and not directory_configured()

    @property
    def state(self) -> str:
        """The account's state as the Users page and `users list` show it. A leaver the directory re-check
        (or a refused sign-in) found read "active" there, as if nothing had happened: only the audit
        trail's `access_ended` row said otherwise."""
        if not self.active:
            return "deactivated"
        if self.cut_off:
            return "no access (directory sign-in switched off)"
        if self.from_directory and not self.directory_access:
            return "no access (ended by the directory: see the audit trail)"
        return "active"

    @property
    def under_reserved_name(self) -> bool:
        """A directory account named PACS_SUBMITTER, made before directory sign-in refused that name:
        migration 0008 deactivated it, and it may not be activated again (its films would pass for
        the PACS's)."""
        return self.from_directory and reserved_username(self.username)

    def set_password(self, password: str) -> None:
        self.password_hash = hash_password(password)

    def set_active(self, wanted: bool) -> bool:
        """Activate or deactivate the account; whether this request changed it (of two at once, only one
        ends the access, audits it and says so; both used to)."""
        changed = changed_if(self, User.active.is_(not wanted), active=wanted)
        set_committed_value(self, "active", wanted)  # what the row holds now, whoever wrote it
        return changed

    def lose_directory_access(self) -> bool:
        """Record that the directory gives this account no role; whether this request did (of a sign-in
        refused at the moment the re-check finds the leaver, one writes `access_ended`)."""
        changed = changed_if(self, User.directory_access.is_(True), directory_access=False)
        set_committed_value(self, "directory_access", False)
        return changed

    def take_role(self, role: str) -> bool:
        """Give the account `role` unless another request changed its role since this row was read;
        whether this one did (the caller then audits it and ends the old role's access). Conditional, so
        of two at once (a double-clicked sign-in after a directory move, a sign-in beside the re-check)
        one does: both wrote role_changed, and the second ended the session the first had just begun."""
        changed = changed_if(self, User.role == self.role, role=role)
        if not changed:
            db.session.refresh(self)  # the other's role, and the session version it began under
        return changed

    def check_password(self, password: str) -> bool:
        return verify_password(self.password_hash, password)

    @classmethod
    def by_username(cls, username: str) -> User | None:
        return db.session.scalar(select(cls).where(cls.username == username))

    @classmethod
    def deactivated_account_of_entry(cls, identity: str | None, besides: User | None) -> User | None:
        """A deactivated account made for the directory entry `identity` other than `besides`: one entry
        reaches several rows when its name changed in the directory, or under a filter comparing two
        attributes (uid or mail), which names a new account as typed. The deactivation covers them all."""
        if identity is None:
            return None
        query = select(cls).where(cls.directory_entry_id == identity, cls.active.is_(False))
        if besides is not None:
            query = query.where(cls.id != besides.id)
        return db.session.scalar(query.order_by(cls.id).limit(1))

    @classmethod
    def directory_account_named(cls, username: str) -> User | None:
        """The directory account whose name `username` is in another spelling (case, full-width forms):
        its row is keyed on the entry's own name, folded (auth/directory.py, entry_name)."""
        folded = folded_username(username)
        return db.session.scalar(select(cls).where(func.lower(cls.username) == folded, cls.source == DIRECTORY))

    @classmethod
    def cut_off_accounts_exist(cls) -> bool:
        """Whether directory sign-in is switched off while active directory accounts exist (User.cut_off):
        the sign-in page says so to everyone, not per name, which would tell who has an account."""
        if directory_configured():
            return False
        account = select(cls.id).where(cls.source == DIRECTORY, cls.active.is_(True)).limit(1)
        return db.session.scalar(account) is not None

    @classmethod
    def name_taken(cls, username: str) -> bool:
        """Whether a new local account named `username` would look like an existing one: "Clin" beside
        "clin" splits one person's trail in two, or passes for someone else in it. PACS_SUBMITTER is
        taken too: it is the user every film from the PACS shows (and the history's user filter finds)."""
        if reserved_username(username):
            return True
        folded = folded_username(username)
        return db.session.scalar(select(cls.id).where(func.lower(cls.username) == folded)) is not None


# What name_taken checks, held by the database too: "Alice" and "alice" created at the same moment both
# passed that check before either was saved. The callers answer the second's IntegrityError as "taken".
# (Accounts that already differed only in case when migration 0013 came are left out of it there.)
Index("uq_users_username_folded", func.lower(User.username), unique=True)


def _token_digest(token: str) -> str:
    # API tokens are long random strings, so a fast hash is enough; only the digest is stored.
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(db.Model):
    __tablename__ = "api_tokens"
    # One token per sent form: the page's one-time value is kept with the token it issued, so the form
    # sent again (a reload, a double-click's second POST racing the first) breaks this index and issues
    # nothing, in every worker (a value kept in the session cookie was seen unused by both clicks).
    __table_args__ = (Index("uq_api_tokens_form_once", "user_id", "form_once", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The admin page form's one-time value that issued it (admin.routes.issue_user_token); None: the CLI.
    form_once: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="tokens")

    # A token's last-used time is written at most this often, so a script uploading many
    # films does not pay a database write per request.
    LAST_USED_RESOLUTION = timedelta(minutes=1)

    @classmethod
    def create(cls, user: User, name: str = "", days: int = 90, form_once: str | None = None) -> tuple[ApiToken, str]:
        """Add a new token for `user` valid for `days`: the row and its secret (only the digest is stored)."""
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        row = cls(
            user=user,
            name=name,
            token_digest=_token_digest(secret),
            created_at=now,
            expires_at=now + timedelta(days=days),
            form_once=form_once,
        )
        db.session.add(row)
        return row, secret

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if as_utc(self.expires_at) <= utcnow() else "active"

    @classmethod
    def cut_off_owner(cls, token: str) -> User | None:
        """The active directory account whose token (revoked or not) `token` is, while directory sign-in
        is switched off (User.cut_off); None otherwise. Asked only of a refused token, to say why."""
        if directory_configured():  # nobody is cut off: no query for every refused guess
            return None
        found = db.session.scalar(select(cls).where(cls.token_digest == _token_digest(token)))
        return found.user if found is not None and found.user.active and found.user.cut_off else None

    @classmethod
    def authenticate(cls, token: str) -> ApiToken | None:
        """The live token (with its user, active and with access, loaded) behind `token`, or None; notes its use."""
        now = utcnow()
        found = db.session.scalar(
            select(cls)
            .join(cls.user)
            .options(contains_eager(cls.user))
            .where(
                cls.token_digest == _token_digest(token),
                cls.revoked_at.is_(None),
                cls.expires_at > now,
                User.may_use_tokens,
            )
        )
        if found is not None and (
            found.last_used_at is None or as_utc(found.last_used_at) <= now - cls.LAST_USED_RESOLUTION
        ):
            # Conditional, so concurrent workers write it once; committed at once, before the view runs.
            db.session.execute(
                update(cls)
                .where(
                    cls.id == found.id,
                    or_(cls.last_used_at.is_(None), cls.last_used_at <= now - cls.LAST_USED_RESOLUTION),
                )
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
            db.session.commit()
            set_committed_value(found, "last_used_at", now)  # what the row now holds, not a change to write
        return found


# Where a film came from: the upload page, the API, or the PACS through the DICOM node.
SOURCE_UPLOAD, SOURCE_API, SOURCE_DICOM = "upload", "api", "dicom"
SOURCES = (SOURCE_UPLOAD, SOURCE_API, SOURCE_DICOM)
# Who a film from the PACS is shown as having come from (it has no user).
PACS_SUBMITTER = "PACS"


# Why an administrator cannot activate such an account (User.under_reserved_name), on the page and in the CLI.
RESERVED_ACCOUNT = (
    "{name} is a directory account under the name reserved for films from the PACS; it stays deactivated, "
    "or its films would pass for the PACS's. Its owner needs a directory account with another name."
)


RESERVED_NAME_TAKEN = "The name {name!r} is reserved: it is the user every film from the PACS shows. Choose another."


def reserved_username(username: str) -> bool:
    """Whether the name is no one's, local or from the directory: PACS_SUBMITTER, in any spelling,
    is the user every film from the PACS shows and what the history's user filter finds them by."""
    return folded_username(username) == PACS_SUBMITTER.lower()


class Prediction(db.Model):
    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # None for films received from the PACS: no person submitted them.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    source: Mapped[str] = mapped_column(String(16), default=SOURCE_UPLOAD, server_default=SOURCE_UPLOAD, index=True)
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_format: Mapped[str] = mapped_column(String(16))
    file_size: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(16), index=True)
    p_normal: Mapped[float] = mapped_column(Float)
    p_pneumonia: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    unknown_reason: Mapped[str | None] = mapped_column(Text)
    # A fixed warning shown with an answered verdict (e.g. "outside the validated age range");
    # the header age it comes from is never stored.
    caution: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float)
    # The model's own out-of-distribution scores, kept so drift can be watched (None: logged before 0004).
    chest_probability: Mapped[float | None] = mapped_column(Float)
    feature_distance: Mapped[float | None] = mapped_column(Float)
    # The site operating point the threshold came from; None: the model card's threshold.
    site_calibration_id: Mapped[int | None] = mapped_column(ForeignKey("site_calibrations.id"))
    facts: Mapped[dict] = mapped_column(JSON, default=dict)  # non-identifying acquisition facts only

    user: Mapped[User | None] = relationship()
    # Written with the row (same flush, same transaction), deleted with it; loaded only when read.
    images: Mapped[PredictionImages] = relationship(back_populates="prediction", cascade="all, delete-orphan")
    feedback: Mapped[Feedback | None] = relationship(back_populates="prediction", uselist=False)
    site_calibration: Mapped[SiteCalibration | None] = relationship()

    @property
    def probabilities(self) -> dict[str, float]:
        return {NORMAL: self.p_normal, PNEUMONIA: self.p_pneumonia}

    @property
    def submitter(self) -> str:
        return self.user.username if self.user else PACS_SUBMITTER

    def visible_to(self, user: User) -> bool:
        # Films from the PACS are on every clinician's worklist.
        return user.is_admin or self.user_id == user.id or self.source == SOURCE_DICOM


class PredictionImages(db.Model):
    """A prediction's stored images, in a table of their own. In the predictions table the review
    copy (tens of KB to 0.5 MB) sat in each row ahead of the columns later migrations added, and
    SQLite stores a row's columns in order: every query that read one of those (the monitoring's
    scores, the lists' caution) walked each row's image overflow pages, whatever was deferred."""

    __tablename__ = "prediction_images"

    # The database removes them with their prediction (PostgreSQL; SQLite leaves foreign keys
    # unenforced, so there the ORM cascade on Prediction.images does it).
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True)
    # Deferred: the heat-map layer needs only the map, not the review copy beside it.
    review_png: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # de-identified, downscaled copy
    heatmap_png: Mapped[bytes] = mapped_column(LargeBinary)

    prediction: Mapped[Prediction] = relationship(back_populates="images")


class Feedback(db.Model):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    label: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    prediction: Mapped[Prediction] = relationship(back_populates="feedback")
    user: Mapped[User] = relationship()

    @property
    def label_text(self) -> str:
        """The reading as the form offered it ("Not a chest radiograph"), not its stored code."""
        return FEEDBACK_LABELS.get(self.label, self.label)


class SignInCounter(db.Model):
    """Recent failed sign-ins per key (an account and address pair, or an address), in the database so
    throttling holds across workers and replicas. Rows change only by compare-and-set (auth/throttle.py)."""

    __tablename__ = "sign_in_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditEvent(db.Model):
    """Append-only: the app has no path that updates a row, and the database refuses updates
    (a trigger, see migration 0003); the only deletion is `flask audit prune` past retention."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)  # a username, or "cli:NAME" (shell_actor.py)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # the signed-in user behind the action
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[str] = mapped_column(Text, default="")
    ip: Mapped[str] = mapped_column(String(64), default="")  # client address (after ProxyFix), "" outside requests


def _request_origin() -> tuple[str, int | None]:
    """Client address and signed-in user of the current request, if there is one."""
    if not has_request_context():
        return "", None
    user = g.get("api_user") or (current_user if current_user.is_authenticated else None)
    return (request.remote_addr or "")[:64], getattr(user, "id", None)


def record_audit(actor: str, action: str, target: str = "", details: str = "") -> None:
    ip, user_id = _request_origin()
    db.session.add(
        AuditEvent(actor=actor[:64], action=action, target=target[:255], details=details, ip=ip, user_id=user_id)
    )


# States of a validation run; a run's progress lives in its items, never in a counter.
RUN_QUEUED, RUN_RUNNING, RUN_DONE, RUN_FAILED = "queued", "running", "done", "failed"
RUN_STATES = (RUN_QUEUED, RUN_RUNNING, RUN_DONE, RUN_FAILED)
# States of one film of a run: not yet processed, answered by the model, or refused (unreadable).
ITEM_PENDING, ITEM_DONE, ITEM_REFUSED = "pending", "done", "refused"


class ValidationRun(db.Model):
    """A labelled archive put through the serving pipeline to measure the model on this site's films."""

    __tablename__ = "validation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    archive_name: Mapped[str] = mapped_column(String(255))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=RUN_QUEUED, index=True)
    # Fixed by the first worker that takes the run, so a resumed run keeps the same operating point.
    model_version: Mapped[str | None] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The worker holding the run and until when; a lease that runs out means that worker died.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    metrics: Mapped[dict | None] = mapped_column(JSON)  # computed once, when the last item is done

    created_by: Mapped[User] = relationship()


class ValidationItem(db.Model):
    """One film of a validation run: its label from the archive and, once processed, its result."""

    __tablename__ = "validation_items"
    __table_args__ = (Index("ix_validation_items_run_state", "run_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("validation_runs.id"))
    entry: Mapped[str] = mapped_column(Text)  # the member name inside the archive
    truth: Mapped[str] = mapped_column(String(16))  # NORMAL or PNEUMONIA
    state: Mapped[str] = mapped_column(String(16), default=ITEM_PENDING)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sha256: Mapped[str | None] = mapped_column(String(64))
    image_format: Mapped[str | None] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(16))
    p_pneumonia: Mapped[float | None] = mapped_column(Float)
    chest_probability: Mapped[float | None] = mapped_column(Float)
    feature_distance: Mapped[float | None] = mapped_column(Float)
    unknown_reason: Mapped[str | None] = mapped_column(Text)
    refusal: Mapped[str | None] = mapped_column(Text)  # why an unreadable film was refused
    review_png: Mapped[bytes | None] = mapped_column(LargeBinary)  # pixels only: burned-in text stays
    heatmap_png: Mapped[bytes | None] = mapped_column(LargeBinary)


class SiteCalibration(db.Model):
    """A site operating point: a threshold adopted from a validation run for one model version."""

    __tablename__ = "site_calibrations"
    # At most one in force per model version, held by the database: two adoptions at the same moment
    # would otherwise both go in force, and withdrawing the later would silently bring back the other.
    __table_args__ = (
        Index(
            "uq_site_calibrations_in_force",
            "model_version",
            unique=True,
            sqlite_where=text("withdrawn_at IS NULL"),
            postgresql_where=text("withdrawn_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    validation_run_id: Mapped[int] = mapped_column(ForeignKey("validation_runs.id"))
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    threshold: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    adopted_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    adopted_by: Mapped[User] = relationship(foreign_keys=[adopted_by_id])
    withdrawn_by: Mapped[User | None] = relationship(foreign_keys=[withdrawn_by_id])
    validation_run: Mapped[ValidationRun] = relationship()


# States of a film received by the DICOM node.
RECEIPT_QUEUED, RECEIPT_SCREENING, RECEIPT_SCREENED = "queued", "screening", "screened"
RECEIPT_SKIPPED, RECEIPT_REFUSED = "skipped", "refused"
RECEIPT_STATES = (RECEIPT_QUEUED, RECEIPT_SCREENING, RECEIPT_SCREENED, RECEIPT_SKIPPED, RECEIPT_REFUSED)


class DicomReceipt(db.Model):
    """One SOP instance the PACS sent. Identified only by keyed hashes of its UIDs (webapp/pseudonyms.py):
    the unique `sop_key` makes a second copy of the same instance a no-op."""

    __tablename__ = "dicom_receipts"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    __table_args__ = (
        UniqueConstraint("sop_key", name="uq_dicom_receipts_sop_key"),
        UniqueConstraint("prediction_id", name="uq_dicom_receipts_prediction_id"),
    )

    sop_key: Mapped[str] = mapped_column(String(64))
    study_key: Mapped[str] = mapped_column(String(64), index=True)
    calling_aet: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))  # the kind of object, not an identifier
    modality: Mapped[str] = mapped_column(String(16), default="")
    state: Mapped[str] = mapped_column(String(16), default=RECEIPT_QUEUED, index=True)
    copies: Mapped[int] = mapped_column(Integer, default=1)  # how many times the PACS sent it
    # The spooled file (a random name under instance/dicom/spool), deleted once its results are built.
    spool_name: Mapped[str | None] = mapped_column(String(64))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)  # why a film was refused
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"))

    prediction: Mapped[Prediction | None] = relationship()
    results: Mapped[list[DicomResult]] = relationship(back_populates="receipt", order_by="DicomResult.id")


# States of a result in the outbox. Failed: not delivered after every try (or never built); refused:
# the PACS refused it in a way no later try changes (its configuration must), so it was not tried again.
RESULT_PENDING, RESULT_SENT, RESULT_FAILED, RESULT_REFUSED = "pending", "sent", "failed", "refused"
RESULT_STATES = (RESULT_PENDING, RESULT_SENT, RESULT_FAILED, RESULT_REFUSED)
# The results an administrator may send again or discard.
RESULT_UNDELIVERED = (RESULT_FAILED, RESULT_REFUSED)


class DicomResult(db.Model):
    """The outbox: an SR or a secondary capture on its way back to the PACS. Its DICOM bytes (which
    carry the patient's name) live in a file under instance/dicom/outbox only until delivered."""

    __tablename__ = "dicom_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    receipt_id: Mapped[int] = mapped_column(ForeignKey("dicom_receipts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "SR" or "SC"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default=RESULT_PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The tries in a row the PACS accepted and then aborted (pacs/tasks.py refuses the result at 3).
    aborts_in_a_row: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    file_name: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    receipt: Mapped[DicomReceipt] = relationship(back_populates="results")


class WorklistRead(db.Model):
    """A clinician has opened a film of the worklist."""

    __tablename__ = "worklist_reads"
    __table_args__ = (UniqueConstraint("user_id", "prediction_id", name="uq_worklist_reads_user_prediction"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"), index=True)
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
