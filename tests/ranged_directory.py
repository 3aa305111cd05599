"""A directory server that answers as Active Directory does about a person in more groups than its
MaxValRange.

Active Directory sends at most 1,500 values of an attribute per answer: asked for the `memberOf` of an
entry in more groups, it sends `memberOf;range=0-1499`. OpenLDAP sends no ranges, so the tests' slapd
cannot show what ldap3 hands the app then; this speaks LDAP on the wire (BER, with ldap3's own protocol
classes): any bind is accepted (the person's own answered with `person_bind`, a result code and
diagnostic message, when given: Active Directory's refusal of an expired or locked account), a search
based at the person's DN or above it finds the person with the first range of its groups, and any
other search finds nothing (a group in no other group, a member list without the person).
"""

from __future__ import annotations

import socket
import threading

from ldap3.protocol.rfc4511 import (
    LDAPDN,
    AttributeValue,
    BindResponse,
    LDAPMessage,
    LDAPString,
    MessageID,
    PartialAttribute,
    PartialAttributeList,
    ProtocolOp,
    ResultCode,
    SearchResultDone,
    SearchResultEntry,
    Vals,
)
from pyasn1.codec.ber import decoder, encoder
from pyasn1.error import PyAsn1Error

RANGE = 1500  # Active Directory's default MaxValRange


def ad_settings(server: RangedDirectory, **groups: str) -> dict[str, str]:
    """The app's directory settings for the stand-in, as for an Active Directory, plus `groups`
    (LDAP_ADMIN_GROUP_DN, LDAP_CLINICIAN_GROUP_DN)."""
    return {
        "LDAP_URL": server.url,
        "LDAP_BIND_DN": "CN=svc-cxr,DC=ad,DC=test",
        "LDAP_BIND_PASSWORD": "x",
        "LDAP_USER_BASE": "OU=Staff,DC=ad,DC=test",
        "LDAP_USER_FILTER": "(sAMAccountName={username})",
        **groups,
    }


def _message(message_id: int, name: str, operation) -> bytes:
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    choice = ProtocolOp()
    choice.setComponentByName(name, operation)
    message["protocolOp"] = choice
    return encoder.encode(message)


def _result(kind, code: int, text: str = ""):
    result = kind()
    result["resultCode"] = ResultCode(code)
    result["matchedDN"] = LDAPDN("")
    result["diagnosticMessage"] = LDAPString(text)
    return result


class RangedDirectory:
    """Listens on a free loopback port until close(); `asked` holds the base of each search."""

    def __init__(self, person: str, groups: list[str], person_bind: tuple[int, str] | None = None):
        self.person, self.groups, self.person_bind = person, groups, person_bind
        self.asked: list[str] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"ldap://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._socket.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            pending = b""
            while data := connection.recv(65536):
                pending += data
                while pending:
                    try:
                        message, pending = decoder.decode(pending, asn1Spec=LDAPMessage())
                    except PyAsn1Error:  # not all of the message has come yet
                        break
                    message_id, operation = int(message["messageID"]), message["protocolOp"]
                    if operation.getName() == "unbindRequest":
                        return
                    if operation.getName() == "bindRequest":
                        connection.sendall(_message(message_id, "bindResponse", self._bind(operation.getComponent())))
                    elif operation.getName() == "searchRequest":
                        connection.sendall(self._answer(message_id, operation.getComponent()))

    def _bind(self, bind):
        if self.person_bind and str(bind["name"]).lower() == self.person.lower():
            return _result(BindResponse, *self.person_bind)
        return _result(BindResponse, 0)

    def _answer(self, message_id: int, search) -> bytes:
        base = str(search["baseObject"])
        self.asked.append(base)
        done = _message(message_id, "searchResDone", _result(SearchResultDone, 0))
        if not self.person.lower().endswith(base.lower()):
            return done
        values = Vals()
        for position, group in enumerate(self.groups[:RANGE]):
            values.setComponentByPosition(position, AttributeValue(group))
        attribute = PartialAttribute()
        attribute["type"] = f"memberOf;range=0-{RANGE - 1}"
        attribute["vals"] = values
        attributes = PartialAttributeList()
        attributes.setComponentByPosition(0, attribute)
        entry = SearchResultEntry()
        entry["object"] = LDAPDN(self.person)
        entry["attributes"] = attributes
        return _message(message_id, "searchResEntry", entry) + done
