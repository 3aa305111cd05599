"""A directory server that answers as Active Directory does about a group larger than its MaxValRange.

Active Directory sends at most 1,500 values of an attribute per answer: asked for `member` of a larger
group it sends `member;range=0-1499`, and each `member;range=N-*` asked for next, until a range that
ends in `*`. OpenLDAP sends no ranges, so the tests' slapd cannot show how ldap3 reads them; this
speaks LDAP on the wire (BER, with ldap3's own protocol classes) for that one question: any bind is
accepted (and kept in `binds`: a test's referral points here), and every search is answered with the
group's members, ranged, whatever its base.
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
BUSY = 51  # the result code a refused range gets here (busy)


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
    """Listens on a free loopback port until close(); `asked` holds each search's attribute list, `binds`
    each bind's DN and password."""

    def __init__(self, members: list[str], refuse_from: int | None = None):
        self.members = members
        self.refuse_from = refuse_from  # ranges from this value on are refused (busy)
        self.asked: list[list[str]] = []
        self.binds: list[tuple[str, bytes]] = []
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
                        bind = operation.getComponent()
                        self.binds.append((str(bind["name"]), bytes(bind["authentication"].getComponent())))
                        connection.sendall(_message(message_id, "bindResponse", _result(BindResponse, 0)))
                    elif operation.getName() == "searchRequest":
                        connection.sendall(self._answer(message_id, operation.getComponent()))

    def _answer(self, message_id: int, search) -> bytes:
        wanted = [str(attribute) for attribute in search["attributes"]]
        self.asked.append(wanted)
        start = int(wanted[0].partition(";range=")[2].partition("-")[0] or 0)
        if self.refuse_from is not None and start >= self.refuse_from:
            return _message(message_id, "searchResDone", _result(SearchResultDone, BUSY, "busy"))
        end = start + RANGE
        values = Vals()
        for position, member in enumerate(self.members[start:end]):
            values.setComponentByPosition(position, AttributeValue(member))
        attribute = PartialAttribute()
        attribute["type"] = f"member;range={start}-{end - 1 if end < len(self.members) else '*'}"
        attribute["vals"] = values
        attributes = PartialAttributeList()
        attributes.setComponentByPosition(0, attribute)
        entry = SearchResultEntry()
        entry["object"] = LDAPDN(str(search["baseObject"]))
        entry["attributes"] = attributes
        done = _result(SearchResultDone, 0)
        return _message(message_id, "searchResEntry", entry) + _message(message_id, "searchResDone", done)
