"""Where Sigma rules meet our records: log-source routing and the field-name mapping.

Sigma's generic taxonomies name fields after proxy and web-server logs (``c-uri``, ``cs-host``);
our records use Zeek's names. A pySigma ``ProcessingPipeline`` renames the fields, then
``accessor`` turns each of our names into a getter over the record.

=========================  ==================  ==========================================
Sigma log source           record              fields (Sigma name -> ours)
=========================  ==================  ==========================================
product zeek, service X    X (conn, dns,       Zeek names unchanged; for http also the
                           http, ssl, ftp,     proxy names below (SigmaHQ's zeek rules
                           weird)              mix them in)
category proxy             http                c-uri, cs-uri -> uri; c-uri-stem -> uri_path;
                                               c-uri-query -> uri_query;
                                               c-uri-extension -> uri_extension;
                                               cs-host, r-dns -> host; c-useragent ->
                                               user_agent; cs-method -> method; sc-status
                                               -> status_code; cs-referrer, cs-referer ->
                                               referrer; cs-version -> version;
                                               cs-username -> username
category webserver         http                cs-uri-query, cs-uri -> uri (whole target:
                                               SigmaHQ's web rules look for path traversal
                                               and the like in cs-uri-query, which most web
                                               servers log as path plus query); cs-uri-stem
                                               -> uri_path; cs-user-agent -> user_agent;
                                               cs-referer -> referrer; cs-method, sc-status,
                                               cs-host, cs-username as for proxy
category dns               dns                 query -> query; record_type -> qtype_name;
                                               answer -> answers; response_code ->
                                               rcode_name
category firewall          conn                (none: the generic names below)
every one of the above     (its record)        src_ip, c-ip -> id.orig_h; dst_ip, s-ip ->
                                               id.resp_h; src_port -> id.orig_p;
                                               dst_port, s-port -> id.resp_p
=========================  ==================  ==========================================

``uri_path``, ``uri_query`` and ``uri_extension`` are derived from ``uri``. Keyword detections
(values without a field) search a line made of every field of the record. A field that stays
unmapped and is not a field of the record makes the rule unsupported.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

import msgspec
from sigma.processing.conditions import LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation
from sigma.rule import SigmaLogSource

from a2z.records import Conn, Dns, Ftp, Http, Ssl, Weird
from a2z.rules.errors import UnsupportedRuleError

RuleRecord = Conn | Dns | Http | Ssl | Ftp | Weird
"""The records Sigma rules run on (alerts are our output, never a rule's input)."""

Getter = Callable[[RuleRecord], object]

ZEEK_SERVICES: dict[str, type[RuleRecord]] = {
    "conn": Conn,
    "dns": Dns,
    "http": Http,
    "ssl": Ssl,
    "ftp": Ftp,
    "weird": Weird,
}
CATEGORIES: dict[str, type[RuleRecord]] = {
    "proxy": Http,
    "webserver": Http,
    "dns": Dns,
    "firewall": Conn,
}

_ENDPOINTS: dict[str | None, str | list[str]] = {
    "src_ip": "id.orig_h",
    "c-ip": "id.orig_h",
    "dst_ip": "id.resp_h",
    "s-ip": "id.resp_h",
    "src_port": "id.orig_p",
    "dst_port": "id.resp_p",
    "s-port": "id.resp_p",
}
_HTTP_COMMON: dict[str | None, str | list[str]] = {
    "cs-host": "host",
    "r-dns": "host",
    "cs-method": "method",
    "sc-status": "status_code",
    "cs-referrer": "referrer",
    "cs-referer": "referrer",
    "cs-version": "version",
    "cs-username": "username",
    "cs-uri-stem": "uri_path",
    "c-uri-stem": "uri_path",
    "c-uri-extension": "uri_extension",
}
PROXY_FIELDS: dict[str | None, str | list[str]] = {
    **_ENDPOINTS,
    **_HTTP_COMMON,
    "c-uri": "uri",
    "cs-uri": "uri",
    "c-uri-query": "uri_query",
    "c-useragent": "user_agent",
}
WEBSERVER_FIELDS: dict[str | None, str | list[str]] = {
    **_ENDPOINTS,
    **_HTTP_COMMON,
    "cs-uri": "uri",
    "cs-uri-query": "uri",
    "cs-user-agent": "user_agent",
    "c-useragent": "user_agent",
}
DNS_FIELDS: dict[str | None, str | list[str]] = {
    **_ENDPOINTS,
    "record_type": "qtype_name",
    "answer": "answers",
    "response_code": "rcode_name",
}
ZEEK_HTTP_FIELDS: dict[str | None, str | list[str]] = {
    "c-uri": "uri",
    "c-useragent": "user_agent",
    "cs-host": "host",
    "cs-method": "method",
}


def _mapping(
    ident: str, fields: dict[str | None, str | list[str]], **logsource: str
) -> ProcessingItem:
    return ProcessingItem(
        identifier=f"a2z_{ident}",
        transformation=FieldMappingTransformation(fields),
        rule_conditions=[LogsourceCondition(**logsource)],
    )


def build_pipeline() -> ProcessingPipeline:
    """The pySigma pipeline that renames Sigma's taxonomy fields to ours (table above)."""
    return ProcessingPipeline(
        name="a2z records",
        priority=20,
        items=[
            _mapping("proxy", PROXY_FIELDS, category="proxy"),
            _mapping("webserver", WEBSERVER_FIELDS, category="webserver"),
            _mapping("dns", DNS_FIELDS, category="dns"),
            _mapping("firewall", dict(_ENDPOINTS), category="firewall"),
            _mapping("zeek_http", ZEEK_HTTP_FIELDS, product="zeek", service="http"),
        ],
    )


def route(logsource: SigmaLogSource) -> type[RuleRecord]:
    """The record type a rule's log source describes; unsupported if none does."""
    product, category, service = logsource.product, logsource.category, logsource.service
    if product == "zeek" and category is None and service in ZEEK_SERVICES:
        return ZEEK_SERVICES[service]
    if product in (None, "zeek") and service is None and category in CATEGORIES:
        return CATEGORIES[category]
    described = " ".join(
        f"{k}={v}"
        for k, v in (("product", product), ("category", category), ("service", service))
        if v
    )
    raise UnsupportedRuleError(f"logsource {described or '(empty)'} has no record type")


def _attributes(record_type: type[RuleRecord]) -> dict[str, str]:
    """Zeek field name (``id.orig_h``) -> Python attribute name (``orig_h``)."""
    return {f.encode_name: f.name for f in msgspec.structs.fields(record_type)}


def field_names(record_type: type[RuleRecord]) -> tuple[str, ...]:
    """The Python attribute names of a record type, in schema order."""
    return tuple(f.name for f in msgspec.structs.fields(record_type))


def _uri_path(rec: RuleRecord) -> object:
    uri = getattr(rec, "uri", None)
    return uri.partition("?")[0] if isinstance(uri, str) else None


def _uri_query(rec: RuleRecord) -> object:
    uri = getattr(rec, "uri", None)
    if not isinstance(uri, str) or "?" not in uri:
        return None
    return uri.partition("?")[2]


def _uri_extension(rec: RuleRecord) -> object:
    path = _uri_path(rec)
    if not isinstance(path, str):
        return None
    ext = posixpath.splitext(path)[1]
    return ext[1:] if ext else None


_DERIVED: dict[type[RuleRecord], dict[str, Getter]] = {
    Http: {"uri_path": _uri_path, "uri_query": _uri_query, "uri_extension": _uri_extension},
}


def accessor(record_type: type[RuleRecord], field: str) -> Getter:
    """A getter for one field of ``record_type`` by its Zeek (or derived) name."""
    derived = _DERIVED.get(record_type, {}).get(field)
    if derived is not None:
        return derived
    attrs = _attributes(record_type)
    attr = attrs.get(field)
    if attr is None:
        tag = record_type.__struct_config__.tag
        raise UnsupportedRuleError(f"field '{field}' has no equivalent in {tag} records")
    name = attr

    def get(rec: RuleRecord) -> object:
        return getattr(rec, name)

    return get


def keyword_accessor(record_type: type[RuleRecord]) -> Getter:
    """A getter for keyword (field-less) detections: every field's text on one line."""
    names = field_names(record_type)

    def get(rec: RuleRecord) -> object:
        return " ".join(text(getattr(rec, n)) for n in names if getattr(rec, n) is not None)

    return get


def text(value: object) -> str:
    """A field value as the text string matchers compare (bools as Sigma writes them)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(text(v) for v in value)
    return str(value)
