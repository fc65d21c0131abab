"""Rewriting of a message's HTML for tracking: click links, the open pixel and the honeypot link."""

from __future__ import annotations

import hashlib
import re
import string
import uuid
from dataclasses import dataclass
from html import escape, unescape
from html.entities import html5 as named_character_references
from html.parser import HTMLParser
from typing import NamedTuple

from server.domain.tracking_links import (
    InvalidDestination,
    SigningKeyring,
    TrackingClaims,
    TrackingKind,
    click_path,
    honeypot_path,
    normalize_destination,
    open_pixel_path,
    sign_tracking_token,
)

OPT_OUT_ATTRIBUTE = "data-topmail-track"
"""Attribute that keeps a link untracked when its value is "false"; removed from the output."""

_LINK_TAGS = frozenset({"a", "area"})
# Elements whose content browsers read as text, never as tags. html.parser in Python 3.11.7 treats
# only script and style this way, so the scanner switches the others to text mode itself.
_RAW_TEXT_ELEMENTS = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"})
_TAG_WHITESPACE = "\t\n\f\r "
_ASCII_LOWERCASE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_HTTP_SCHEME = re.compile(r"https?:", re.IGNORECASE)
# Characters that the URL parser of browsers strips from both ends of an href: C0 controls and space.
_URL_SURROUNDING = "".join(chr(code) for code in range(0x21))
_URL_IGNORED = str.maketrans("", "", "\t\n\r")
_CHARACTER_REFERENCE = re.compile(r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|([A-Za-z0-9]+;?))")
# A decimal reference with 8 or more digits, which html.unescape cannot always convert.
_LONG_DECIMAL_REFERENCE = re.compile(r"&#(?=[0-9]{8})")
# display:none hides the honeypot in most clients and mso-hide:all in Outlook for Windows. The
# size rules cover clients that drop display:none.
_HONEYPOT_STYLE = "display:none;max-height:0;max-width:0;overflow:hidden;font-size:0;line-height:0;mso-hide:all"
# No display:none here, because some clients do not load hidden images, and then no open is seen.
_PIXEL_STYLE = "width:1px;height:1px;border:0;margin:0;padding:0"


@dataclass(frozen=True, slots=True)
class TrackedLink:
    """A link rewritten to the click path, with the link id and destination its token carries."""

    link_id: str
    destination: str


@dataclass(frozen=True, slots=True)
class RejectedLink:
    """An http or https link left untracked because its destination is invalid."""

    href: str
    reason: str


@dataclass(frozen=True, slots=True)
class InstrumentedHtml:
    """A message's HTML after instrumentation, with its tracked and rejected links in document order."""

    html: str
    links: tuple[TrackedLink, ...]
    rejected_links: tuple[RejectedLink, ...]


def instrument_html(
    html: str,
    *,
    keyring: SigningKeyring,
    gateway_base_url: str,
    workspace_id: uuid.UUID,
    message_id: str,
    contact_id: uuid.UUID,
    campaign_id: str | None = None,
) -> InstrumentedHtml:
    """Rewrite a message's HTML so that clicks, opens and honeypot hits reach the tracking gateway.

    Every `<a>` and `<area>` whose href is an absolute http or https URL gets the click URL of a
    token that carries the normalized destination and a link id `<n>-<8 hex digits>`. Here n is
    the link's 1-based position among the tracked links, followed by the start of the SHA-256 hex
    digest of its destination.
    Character references in the href are decoded exactly once, by the rules for attribute values
    in the HTML standard, and whitespace around it is dropped as browsers drop it.

    The rest of the document is kept byte for byte, with three changes:
    - `data-topmail-track` attributes are removed from `<a>` and `<area>` tags, because they are
      instructions to this function;
    - a tracked tag loses any later duplicate href, which browsers ignore but other parsers may use;
    - the honeypot link and the open pixel are inserted before the last `</body>` tag, else before
      the last `</html>` tag, else at the end of the document.

    These links stay as they are:
    - mailto:, tel:, fragment (#...), relative and other non-http links. A `<base href>` is left
      alone and does not make relative links trackable;
    - tags with `data-topmail-track="false"` or `clicktracking="off"`, the attribute other mail
      services use. The latter is kept in the output;
    - links inside comments, including Outlook conditional comments (`<!--[if mso]>...<![endif]-->`),
      so Outlook for Windows shows untracked links there, and links inside raw text elements such
      as `<script>`, `<textarea>` and `<title>`;
    - http and https links with an invalid destination, which are listed in `rejected_links`.

    Invalid HTML does not raise: a construct is read the way the HTML standard reads it or left
    untouched. Every token carries `campaign_id` when it is given. Raises ValueError for an invalid
    gateway base URL, message id or campaign id.
    """
    base_url = _checked_base_url(gateway_base_url)
    rewriter = _LinkRewriter(keyring, base_url, _Recipient(workspace_id, message_id, contact_id, campaign_id))

    scanner = _MarkupScanner(html)
    scanner.scan()

    edits: list[_Edit] = []
    for offset, source in scanner.link_tags:
        edits.extend(rewriter.rewrite(offset, source))
    insertion_point = _hidden_elements_position(scanner, len(html))
    edits.append(_Edit(insertion_point, insertion_point, rewriter.hidden_elements()))

    return InstrumentedHtml(
        html=_apply_edits(html, edits),
        links=tuple(rewriter.links),
        rejected_links=tuple(rewriter.rejected_links),
    )


def _checked_base_url(base_url: str) -> str:
    example = "Use an absolute http or https URL without query or fragment, such as https://t.example.com."
    try:
        normalized = normalize_destination(base_url)
    except InvalidDestination as error:
        raise ValueError(f"gateway base URL {base_url!r} is invalid: {error.reason}. {example}") from error
    if normalized != base_url or "?" in base_url or "#" in base_url:
        raise ValueError(f"gateway base URL {base_url!r} is invalid. {example}")
    return base_url.rstrip("/")


def _hidden_elements_position(scanner: _MarkupScanner, document_length: int) -> int:
    if scanner.body_end is not None:
        return scanner.body_end
    if scanner.html_end is not None:
        return scanner.html_end
    return document_length


class _Edit(NamedTuple):
    """A replacement of document[start:end], which inserts when start == end."""

    start: int
    end: int
    text: str


def _apply_edits(document: str, edits: list[_Edit]) -> str:
    pieces: list[str] = []
    position = 0
    for edit in sorted(edits):
        pieces.append(document[position : edit.start])
        pieces.append(edit.text)
        position = edit.end
    pieces.append(document[position:])
    return "".join(pieces)


class _Recipient(NamedTuple):
    """The ids every token of one instrumented message carries."""

    workspace_id: uuid.UUID
    message_id: str
    contact_id: uuid.UUID
    campaign_id: str | None


class _LinkRewriter:
    """Signs the tokens of one message and contact, and turns link tags into edits."""

    def __init__(self, keyring: SigningKeyring, base_url: str, recipient: _Recipient) -> None:
        self._keyring = keyring
        self._base_url = base_url
        self._recipient = recipient
        # Built first so that an invalid message or campaign id raises before any parsing.
        self._open_token = self._sign(TrackingKind.OPEN)
        self.links: list[TrackedLink] = []
        self.rejected_links: list[RejectedLink] = []

    def rewrite(self, offset: int, source: str) -> list[_Edit]:
        """Return the edits for the start tag found at `offset`, or none if the tag stays as it is."""
        tag = _parse_start_tag(source)
        if tag is None or tag.name not in _LINK_TAGS:
            return []
        edits = [_removal(source, attribute) for attribute in tag.attributes if attribute.name == OPT_OUT_ATTRIBUTE]

        href = tag.first("href")
        if href is None or href.raw_value is None or _is_opted_out(tag):
            return _shifted(edits, offset)
        url = _url_from_href(_decode_attribute_value(href.raw_value))
        if not _HTTP_SCHEME.match(url):
            return _shifted(edits, offset)
        try:
            destination = normalize_destination(url)
        except InvalidDestination as error:
            self.rejected_links.append(RejectedLink(url, error.reason))
            return _shifted(edits, offset)

        link_id = f"{len(self.links) + 1}-{hashlib.sha256(destination.encode('ascii')).hexdigest()[:8]}"
        self.links.append(TrackedLink(link_id, destination))
        click_url = self._base_url + click_path(self._sign(TrackingKind.CLICK, link_id, destination))
        quote = href.quote or '"'
        # _parse_attribute sets the value span whenever it sets raw_value.
        assert href.value_start is not None
        assert href.value_end is not None
        edits.append(_Edit(href.value_start, href.value_end, quote + escape(click_url) + quote))
        for attribute in tag.attributes:
            if attribute.name == "href" and attribute is not href:
                edits.append(_removal(source, attribute))
        return _shifted(edits, offset)

    def hidden_elements(self) -> str:
        """Return the honeypot link and the open pixel, as HTML to insert at the end of the body."""
        honeypot_url = self._base_url + honeypot_path(self._sign(TrackingKind.HONEYPOT))
        pixel_url = self._base_url + open_pixel_path(self._open_token)
        return (
            f'<a href="{escape(honeypot_url)}" aria-hidden="true" tabindex="-1" style="{_HONEYPOT_STYLE}"></a>'
            f'<img src="{escape(pixel_url)}" width="1" height="1" alt="" border="0" style="{_PIXEL_STYLE}" />'
        )

    def _sign(self, kind: TrackingKind, link_id: str | None = None, destination: str | None = None) -> str:
        recipient = self._recipient
        claims = TrackingClaims(
            kind,
            recipient.workspace_id,
            recipient.message_id,
            recipient.contact_id,
            link_id,
            destination,
            recipient.campaign_id,
        )
        return sign_tracking_token(claims, self._keyring)


def _is_opted_out(tag: _StartTag) -> bool:
    marker = tag.first(OPT_OUT_ATTRIBUTE)
    if marker is not None and _attribute_text(marker) == "false":
        return True
    click_tracking = tag.first("clicktracking")
    return click_tracking is not None and _attribute_text(click_tracking) == "off"


def _attribute_text(attribute: _Attribute) -> str:
    decoded = _decode_attribute_value(attribute.raw_value or "")
    return decoded.strip(_TAG_WHITESPACE).translate(_ASCII_LOWERCASE)


def _url_from_href(href: str) -> str:
    """Drop what the URL parser of browsers ignores: surrounding controls and spaces, tabs and newlines."""
    return href.strip(_URL_SURROUNDING).translate(_URL_IGNORED)


def _removal(source: str, attribute: _Attribute) -> _Edit:
    # Removing the attribute with the whitespace before it keeps the tag valid. The one exception
    # is a next attribute that follows a quoted value without whitespace, so one space is put back.
    following = source[attribute.end : attribute.end + 1]
    separator = "" if following and following in _TAG_WHITESPACE + "/>" else " "
    return _Edit(attribute.separator_start, attribute.end, separator)


def _shifted(edits: list[_Edit], offset: int) -> list[_Edit]:
    return [_Edit(edit.start + offset, edit.end + offset, edit.text) for edit in edits]


@dataclass(frozen=True, slots=True)
class _Attribute:
    """One attribute of a start tag, with positions relative to the tag's source."""

    name: str
    separator_start: int
    end: int
    value_start: int | None
    value_end: int | None
    quote: str
    raw_value: str | None


@dataclass(frozen=True, slots=True)
class _StartTag:
    name: str
    attributes: tuple[_Attribute, ...]

    def first(self, name: str) -> _Attribute | None:
        """Return the first attribute with the name: the HTML standard ignores later duplicates."""
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        return None


def _parse_start_tag(source: str) -> _StartTag | None:
    """Split a start tag's source into name and attributes as the HTML tokenizer does.

    Returns None when the tokenizer would end the tag anywhere but at the last character of
    `source`, which means that html.parser and the HTML standard disagree about this tag.
    """
    position = 1
    while position < len(source) and source[position] not in _TAG_WHITESPACE + "/>":
        position += 1
    name = source[1:position].translate(_ASCII_LOWERCASE)
    attributes: list[_Attribute] = []
    previous_end = position

    while position < len(source):
        character = source[position]
        if character == ">":
            return _StartTag(name, tuple(attributes)) if position == len(source) - 1 else None
        if character in _TAG_WHITESPACE or character == "/":
            position += 1
            continue
        attribute = _parse_attribute(source, position, previous_end)
        if attribute is None:
            return None
        attributes.append(attribute)
        position = previous_end = attribute.end
    return None


def _parse_attribute(source: str, name_start: int, separator_start: int) -> _Attribute | None:
    # A name may start with '=', which ends the name anywhere else.
    name_end = name_start + 1
    while name_end < len(source) and source[name_end] not in _TAG_WHITESPACE + "/>=":
        name_end += 1
    name = source[name_start:name_end].translate(_ASCII_LOWERCASE)

    position = _skip_whitespace(source, name_end)
    if position >= len(source) or source[position] != "=":
        return _Attribute(name, separator_start, name_end, None, None, "", None)

    value_start = _skip_whitespace(source, position + 1)
    if value_start >= len(source):
        return None
    first = source[value_start]
    if first in "\"'":
        closing = source.find(first, value_start + 1)
        if closing == -1:
            return None
        raw_value = source[value_start + 1 : closing]
        return _Attribute(name, separator_start, closing + 1, value_start, closing + 1, first, raw_value)

    value_end = value_start
    while value_end < len(source) and source[value_end] not in _TAG_WHITESPACE + ">":
        value_end += 1
    raw_value = source[value_start:value_end]
    return _Attribute(name, separator_start, value_end, value_start, value_end, "", raw_value)


def _skip_whitespace(source: str, position: int) -> int:
    while position < len(source) and source[position] in _TAG_WHITESPACE:
        position += 1
    return position


def _decode_attribute_value(raw: str) -> str:
    """Decode character references in an attribute value, as the HTML standard does.

    html.unescape misses one rule for attributes: a named reference without ';' that is followed
    by '=' or a letter or digit stays as written, so `?a=1&copy=2` keeps `&copy=2`.
    """
    if "&" not in raw:
        return raw
    return _CHARACTER_REFERENCE.sub(_decoded_reference, raw)


def _decoded_reference(match: re.Match[str]) -> str:
    name_run = match.group(1)
    if name_run is None:
        return _decoded_numeric_reference(match.group())

    # The longest prefix of the run that is a known name is the reference, and the rest is text.
    for length in range(len(name_run), 0, -1):
        name = name_run[:length]
        if name in named_character_references:
            break
    else:
        return match.group()

    following = name_run[length : length + 1] or match.string[match.end() : match.end() + 1]
    if not name.endswith(";") and (following == "=" or (following.isascii() and following.isalnum())):
        return match.group()
    return named_character_references[name] + name_run[length:]


def _decoded_numeric_reference(reference: str) -> str:
    # Numeric references have no special rule in attributes, and html.unescape maps invalid code
    # points as the standard does. But int() rejects decimal strings above sys.get_int_max_str_digits()
    # (4300 by default), so a long decimal number is mapped here: beyond 7 digits it exceeds U+10FFFF.
    if reference[2] in "xX":
        return unescape(reference)
    digits = reference[2:].rstrip(";").lstrip("0")
    if len(digits) > 7:
        return "\N{REPLACEMENT CHARACTER}"
    return unescape(f"&#{digits or '0'};")


class _MarkupScanner(HTMLParser):
    """Records the source and offset of every `<a>` and `<area>` start tag and of the body and html end tags.

    `scan` feeds the whole document in one call, because the overrides below treat the end of the
    fed text as the end of the document, as the HTML standard does for an unclosed comment.
    """

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self._document = document
        self._line_starts = [0, *(match.end() for match in re.finditer("\n", document))]
        self.link_tags: list[tuple[int, str]] = []
        self.body_end: int | None = None
        self.html_end: int | None = None
        self._last_greater_than = (-1, -1)

    def scan(self) -> None:
        """Parse the document once, filling `link_tags`, `body_end` and `html_end`."""
        # html.unescape, which html.parser calls on text and attribute values, raises ValueError
        # for a decimal reference longer than the int conversion limit. The parser gets a copy of
        # the same length in which such references are not references, and tag sources are read
        # from the original document.
        self.feed(_LONG_DECIMAL_REFERENCE.sub("&_", self._document))
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _RAW_TEXT_ELEMENTS:
            self.set_cdata_mode(tag)
        if tag not in _LINK_TAGS:
            return
        parsed_source = self.get_starttag_text()
        if parsed_source is not None:
            offset = self._offset()
            self.link_tags.append((offset, self._document[offset : offset + len(parsed_source)]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # Browsers ignore the '/' of '<a/>' or '<body/>': the tag opens an element as usual.
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()
        elif tag == "html":
            self.html_end = self._offset()

    # NOTE: parse_comment and parse_html_declaration are undocumented hooks of html.parser,
    # overridden as of CPython 3.11.7. There, '<![' followed by anything but a CDATA, IF or similar
    # keyword raises AssertionError, '<!-->' does not end a comment, and an unclosed comment becomes
    # text. These versions follow the HTML standard instead.

    def parse_comment(self, i: int, report: bool = True) -> int:
        text_start = i + 4
        if self.rawdata.startswith(">", text_start):
            text_end, end = text_start, text_start + 1
        elif self.rawdata.startswith("->", text_start):
            text_end, end = text_start, text_start + 2
        else:
            text_end, end = _comment_end(self.rawdata, text_start)
        if report:
            self.handle_comment(self.rawdata[text_start:text_end])
        return end

    def parse_html_declaration(self, i: int) -> int:
        if self.rawdata.startswith("<!--", i):
            return self.parse_comment(i)
        # A DOCTYPE, and anything else after '<!' such as '<![if mso]>', lasts until the next '>'
        # or the end of the document. This includes '<![CDATA[', although browsers read a CDATA
        # section inside SVG or MathML up to ']]>'.
        closing = self.rawdata.find(">", i + 2)
        text_end = len(self.rawdata) if closing == -1 else closing
        if self.rawdata[i + 2 : i + 9].lower() == "doctype":
            self.handle_decl(self.rawdata[i + 2 : text_end])
        else:
            self.handle_comment(self.rawdata[i + 2 : text_end])
        return min(text_end + 1, len(self.rawdata))

    def parse_starttag(self, i: int) -> int:
        return self._rest_of_document() if self._is_unterminated(i) else super().parse_starttag(i)

    def parse_endtag(self, i: int) -> int:
        return self._rest_of_document() if self._is_unterminated(i) else super().parse_endtag(i)

    def parse_pi(self, i: int) -> int:
        return self._rest_of_document() if self._is_unterminated(i) else super().parse_pi(i)

    def _is_unterminated(self, i: int) -> bool:
        """Tell whether no '>' follows offset i, so a tag there runs to the end of the document."""
        # html.parser retries such a tag at every later '<' and scans to the end each time, which
        # is quadratic: "<a" * 200000 took 74 s with CPython 3.11.7 on 2 cores, measured once.
        # The standard drops a tag cut off by the end of the document, so consuming the rest
        # changes no link. rawdata loses a prefix after each feed, so its length identifies it.
        length, position = self._last_greater_than
        if length != len(self.rawdata):
            position = self.rawdata.rfind(">")
            self._last_greater_than = (len(self.rawdata), position)
        return position < i

    def _rest_of_document(self) -> int:
        return len(self.rawdata)

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column


def _comment_end(document: str, text_start: int) -> tuple[int, int]:
    """Return the end of a comment's text and of the comment, which closes at '-->', '--!>' or the document's end."""
    candidates = [(document.find(closer, text_start), len(closer)) for closer in ("-->", "--!>")]
    found = [(position, position + length) for position, length in candidates if position != -1]
    return min(found, default=(len(document), len(document)))
