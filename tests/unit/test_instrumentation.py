"""HTML instrumentation: click links, the open pixel and the honeypot link, without I/O."""

from __future__ import annotations

import hashlib
import html
import re
import uuid
from html.parser import HTMLParser
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from server.domain.instrumentation import InstrumentedHtml, RejectedLink, TrackedLink, instrument_html
from server.domain.tracking_links import (
    SigningKeyring,
    TrackingClaims,
    TrackingKind,
    normalize_destination,
    sign_tracking_token,
    verify_tracking_token,
)

KEYRING = SigningKeyring({"k1": hashlib.sha256(b"instrumentation tests").digest()}, active_key_id="k1")
GATEWAY = "https://t.example.com"
WORKSPACE_ID = uuid.UUID("3f2b8c1e-9d4a-4c7b-8e2f-1a2b3c4d5e6f")
CONTACT_ID = uuid.UUID("9a1c5e7f-2b3d-4e6a-8c0b-7d9f1e3a5c2b")
MESSAGE_ID = "msg-0001"
CLICK_URL = re.compile(r"https://t\.example\.com/c/([A-Za-z0-9_-]+)")
OPEN_URL = re.compile(r"https://t\.example\.com/o/([A-Za-z0-9_-]+)\.gif")
HONEYPOT_URL = re.compile(r"https://t\.example\.com/h/([A-Za-z0-9_-]+)")
HIDDEN_ELEMENTS = re.compile(r'<a href="https://t\.example\.com/h/[^"]+"[^>]*></a><img src="[^"]+"[^>]*/>')


def instrument(document: str, contact_id: uuid.UUID = CONTACT_ID) -> InstrumentedHtml:
    return instrument_html(
        document,
        keyring=KEYRING,
        gateway_base_url=GATEWAY,
        workspace_id=WORKSPACE_ID,
        message_id=MESSAGE_ID,
        contact_id=contact_id,
    )


def redirect_targets(instrumented: str) -> list[str]:
    """Verify every click token in the HTML and return the destinations the redirect would send."""
    destinations = []
    for token in CLICK_URL.findall(instrumented):
        claims = verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.CLICK)
        assert claims.destination is not None
        destinations.append(claims.destination)
    return destinations


def click_url(link_id: str, destination: str) -> str:
    claims = TrackingClaims(TrackingKind.CLICK, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID, link_id, destination)
    return f"{GATEWAY}/c/{sign_tracking_token(claims, KEYRING)}"


def link_id(position: int, destination: str) -> str:
    return f"{position}-{hashlib.sha256(destination.encode()).hexdigest()[:8]}"


def without_hidden_elements(instrumented: str) -> str:
    stripped, count = HIDDEN_ELEMENTS.subn("", instrumented)
    assert count == 1
    return stripped


class _ElementCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def elements(markup: str) -> list[tuple[str, dict[str, str | None]]]:
    collector = _ElementCollector()
    collector.feed(markup)
    collector.close()
    return collector.elements


# The cases a click redirect must get right


def test_ampersand_entities_are_decoded_once() -> None:
    document = '<a href="https://shop.example.com/rate?dcID=51778&amp;hash=12323&amp;rate=Good">Good</a>'

    result = instrument(document)

    assert redirect_targets(result.html) == ["https://shop.example.com/rate?dcID=51778&hash=12323&rate=Good"]


def test_double_escaped_ampersand_is_decoded_once() -> None:
    result = instrument('<a href="https://x.example/?a=1&amp;amp;b=2">x</a>')

    assert redirect_targets(result.html) == ["https://x.example/?a=1&amp;b=2"]


def test_brackets_reach_the_shop() -> None:
    url = "https://shop.example.com/search?fulltext=campus&f[0]=themes:2&f[1]=themes:1706"

    location = redirect_targets(instrument(f'<a href="{url}">Search</a>').html)[0]

    assert location == url
    assert parse_qsl(urlsplit(unquote(location)).query) == parse_qsl(urlsplit(unquote(url)).query)


def test_iri_path_becomes_uri() -> None:
    result = instrument('<a href="https://shop.example.com/Übersicht.pdf">PDF</a>')

    assert redirect_targets(result.html) == ["https://shop.example.com/%C3%9Cbersicht.pdf"]


def test_existing_escapes_reach_the_shop_unchanged() -> None:
    result = instrument('<a href="https://shop.example.com/a%2Fb?x=%26y">x</a>')

    assert redirect_targets(result.html) == ["https://shop.example.com/a%2Fb?x=%26y"]


def test_non_ascii_host_becomes_punycode() -> None:
    result = instrument('<a href="https://bücher.example/">Bücher</a>')

    assert redirect_targets(result.html) == ["https://xn--bcher-kva.example/"]


def test_legacy_entity_before_equals_sign_stays() -> None:
    # Browsers keep "&copy=" and "&para" + letter in attributes as written.
    result = instrument('<a href="https://x.example/?a=1&copy=2&param=3&not;x">x</a>')

    assert redirect_targets(result.html) == ["https://x.example/?a=1&copy=2&param=3%C2%ACx"]


def test_numeric_references_are_decoded() -> None:
    result = instrument('<a href="https://x.example/?a=1&#38;b=&#x32;">x</a>')

    assert redirect_targets(result.html) == ["https://x.example/?a=1&b=2"]


def test_long_decimal_references_do_not_raise() -> None:
    long_reference = "&#" + "9" * 5000 + ";"
    document = f'<p>{long_reference}</p><a title="{long_reference}" href="https://x.example/{long_reference}">x</a>'

    result = instrument(document)

    assert redirect_targets(result.html) == ["https://x.example/%EF%BF%BD"]


def test_zero_padded_reference_is_decoded() -> None:
    result = instrument(f'<a href="https://x.example/?a=1&#{"0" * 5000}38;b=2">x</a>')

    assert redirect_targets(result.html) == ["https://x.example/?a=1&b=2"]


def test_whitespace_around_href_is_dropped() -> None:
    result = instrument('<a href="\n  https://x.example/long\n/path  ">x</a>')

    assert redirect_targets(result.html) == ["https://x.example/long/path"]


# What changes in the document and what does not


def test_only_href_value_changes() -> None:
    destination = "https://shop.example.com/p?id=1&ref=mail"
    document = (
        '<!DOCTYPE html>\r\n<html><head><title>Sale</title></head>\r\n<body class="x">\n'
        '<p>Hi &amp; welcome</p><a  class="btn"   href="https://shop.example.com/p?id=1&amp;ref=mail" '
        "target=_blank>Shop</a>\n</body></html>"
    )

    result = instrument(document)

    expected = document.replace(
        '"https://shop.example.com/p?id=1&amp;ref=mail"', f'"{click_url(link_id(1, destination), destination)}"'
    )
    assert without_hidden_elements(result.html) == expected
    assert result.links == (TrackedLink(link_id(1, destination), destination),)
    assert result.rejected_links == ()


def test_uppercase_tags_and_attributes() -> None:
    result = instrument('<A HREF="https://x.example/a" Title="T">x</A><AREA SHAPE=rect Href="https://x.example/b">')

    assert redirect_targets(result.html) == ["https://x.example/a", "https://x.example/b"]
    assert result.html.startswith('<A HREF="https://t.example.com/c/')
    assert '" Title="T">x</A><AREA SHAPE=rect Href="https://t.example.com/c/' in result.html


def test_single_quotes_are_kept() -> None:
    result = instrument("<a href='https://x.example/a'>x</a>")

    assert result.html.startswith("<a href='https://t.example.com/c/")
    assert redirect_targets(result.html) == ["https://x.example/a"]


def test_unquoted_href_gets_quotes() -> None:
    result = instrument("<a href=https://x.example/a?b=1&amp;c=2 class=x>x</a>")

    assert result.html.startswith('<a href="https://t.example.com/c/')
    assert '" class=x>x</a>' in result.html
    assert redirect_targets(result.html) == ["https://x.example/a?b=1&c=2"]


def test_self_closing_link_tag() -> None:
    result = instrument('<area href="https://x.example/a"/>')

    assert redirect_targets(result.html) == ["https://x.example/a"]
    assert result.html.startswith('<area href="https://t.example.com/c/')
    assert '"/><a href="https://t.example.com/h/' in result.html


def test_duplicate_href_keeps_first_and_drops_rest() -> None:
    result = instrument('<a href="https://first.example/" class="c" href="https://second.example/">x</a>')

    assert redirect_targets(result.html) == ["https://first.example/"]
    assert "second.example" not in result.html
    assert (
        without_hidden_elements(result.html)
        == f'<a href="{click_url(result.links[0].link_id, "https://first.example/")}" class="c">x</a>'
    )


def test_link_ids_are_position_and_hash() -> None:
    document = (
        '<a href="https://x.example/a">1</a><a href="mailto:a@x.example">m</a><a href="https://x.example/a">2</a>'
    )

    result = instrument(document)

    assert [link.link_id for link in result.links] == [
        link_id(1, "https://x.example/a"),
        link_id(2, "https://x.example/a"),
    ]


def test_link_ids_are_stable_across_contacts() -> None:
    document = '<a href="https://x.example/a">1</a><a href="https://x.example/b">2</a>'

    first = instrument(document)
    second = instrument(document, contact_id=uuid.UUID(int=1))

    assert first.links == second.links
    assert instrument(document) == first


@pytest.mark.parametrize(
    "href",
    [
        "mailto:shop@example.com",
        "tel:+491234567",
        "#top",
        "relative/page.html",
        "/absolute/path",
        "//cdn.example/x",
        "javascript:alert(1)",
        "ftp://files.example/x",
        "",
        "{{unsubscribe_url}}",
    ],
)
def test_non_http_links_stay(href: str) -> None:
    document = f'<a href="{href}">x</a>'

    result = instrument(document)

    assert without_hidden_elements(result.html) == document
    assert result.links == ()
    assert result.rejected_links == ()


def test_link_without_href_stays() -> None:
    document = '<a name="top"></a><a href>x</a><a href=>y</a>'

    assert without_hidden_elements(instrument(document).html) == document


def test_invalid_http_link_is_rejected_and_kept() -> None:
    document = '<a href="https://user:pw@x.example/">x</a><a href="https://x.example:99999/">y</a>'

    result = instrument(document)

    assert without_hidden_elements(result.html) == document
    assert result.links == ()
    assert result.rejected_links == (
        RejectedLink(
            "https://user:pw@x.example/", "it contains user information (user:password@), which is not tracked"
        ),
        RejectedLink("https://x.example:99999/", "port '99999' is not a number from 0 to 65535"),
    )


# Opting out


def test_opt_out_marker_keeps_link_and_is_removed() -> None:
    result = instrument('<a href="https://x.example/" data-topmail-track="false" class="c">x</a>')

    assert without_hidden_elements(result.html) == '<a href="https://x.example/" class="c">x</a>'
    assert result.links == ()


def test_opt_out_marker_is_case_insensitive() -> None:
    result = instrument("<a DATA-TOPMAIL-TRACK=' FALSE ' href='https://x.example/'>x</a>")

    assert without_hidden_elements(result.html) == "<a href='https://x.example/'>x</a>"
    assert result.links == ()


def test_opt_out_marker_before_name_without_space() -> None:
    result = instrument('<a data-topmail-track="false"href="https://x.example/">x</a>')

    assert without_hidden_elements(result.html) == '<a href="https://x.example/">x</a>'


def test_other_marker_values_track_and_are_removed() -> None:
    result = instrument('<a data-topmail-track="true" href="https://x.example/">x</a>')

    assert redirect_targets(result.html) == ["https://x.example/"]
    assert "data-topmail-track" not in result.html


def test_clicktracking_off_keeps_link_and_attribute() -> None:
    document = (
        '<a clicktracking=off href="https://x.example/">x</a><a clicktracking="OFF" href="https://y.example/">y</a>'
    )

    result = instrument(document)

    assert without_hidden_elements(result.html) == document
    assert result.links == ()


def test_clicktracking_on_is_tracked() -> None:
    result = instrument('<a clicktracking="on" href="https://x.example/">x</a>')

    assert redirect_targets(result.html) == ["https://x.example/"]


# Comments, raw text and base


def test_links_in_outlook_conditional_comment_stay() -> None:
    document = (
        '<!--[if mso]><v:roundrect href="https://x.example/mso"><a href="https://x.example/mso">Buy</a>'
        "</v:roundrect><![endif]-->"
    )

    result = instrument(document)

    assert without_hidden_elements(result.html) == document
    assert result.links == ()


def test_links_revealed_to_other_clients_are_tracked() -> None:
    document = '<!--[if !mso]><!--><a href="https://x.example/web">Buy</a><!--<![endif]-->'

    result = instrument(document)

    assert redirect_targets(result.html) == ["https://x.example/web"]


def test_links_in_comments_stay() -> None:
    document = '<!-- <a href="https://x.example/a"> --><!----><!-- x --!><a href="https://x.example/b">b</a>'

    result = instrument(document)

    assert redirect_targets(result.html) == ["https://x.example/b"]


def test_abruptly_closed_comment_ends() -> None:
    result = instrument('<!--><a href="https://x.example/a">a</a><!---><a href="https://x.example/b">b</a>')

    assert redirect_targets(result.html) == ["https://x.example/a", "https://x.example/b"]


def test_unclosed_comment_hides_rest() -> None:
    document = '<body><!-- <a href="https://x.example/a">a</a></body>'

    result = instrument(document)

    assert result.links == ()
    assert result.html.startswith(document)


@pytest.mark.parametrize("element", ["script", "style", "textarea", "title", "SCRIPT", "iframe"])
def test_links_in_raw_text_stay(element: str) -> None:
    document = f'<{element}><a href="https://x.example/a">a</a></{element}><a href="https://x.example/b">b</a>'

    result = instrument(document)

    assert redirect_targets(result.html) == ["https://x.example/b"]


def test_base_href_is_left_alone() -> None:
    document = '<head><base href="https://shop.example.com/"></head><a href="sale.html">Sale</a>'

    result = instrument(document)

    assert without_hidden_elements(result.html) == document
    assert result.links == ()


@pytest.mark.parametrize(
    "markup",
    [
        "<![if mso]>",
        "<![endif]>",
        "<![CDATA[<a href='https://x.example/'>]]>",
        "<![foo",
        "<!",
        "<?xml x?>",
        "<!DOCTYPE",
    ],
)
def test_odd_declarations_do_not_raise(markup: str) -> None:
    result = instrument(markup)

    assert without_hidden_elements(result.html) == markup


def test_tag_read_differently_by_browsers_stays() -> None:
    # html.parser reads a quoted value after "=\xa0", but browsers end the tag at the first ">".
    document = '<a href=\xa0"x>y" href="https://x.example/">z</a>'

    result = instrument(document)

    assert without_hidden_elements(result.html) == document


# Open pixel and honeypot


def test_hidden_elements_go_before_body_end() -> None:
    result = instrument("<html><body><p>Hi</p></BODY></html>")

    assert re.fullmatch(r'<html><body><p>Hi</p><a href="[^"]+"[^>]*></a><img [^>]+/></BODY></html>', result.html)


def test_hidden_elements_go_before_last_body_end() -> None:
    result = instrument("<body>a</body>b</body>c")

    assert re.fullmatch(r"<body>a</body>b<a [^>]+></a><img [^>]+/></body>c", result.html)


def test_hidden_elements_go_before_html_end_without_body() -> None:
    result = instrument("<html><p>Hi</p></html>\n")

    assert re.fullmatch(r"<html><p>Hi</p><a [^>]+></a><img [^>]+/></html>\n", result.html)


def test_hidden_elements_go_at_document_end() -> None:
    result = instrument("<p>Hi</p>")

    assert re.fullmatch(r"<p>Hi</p><a [^>]+></a><img [^>]+/>", result.html)


def test_body_end_in_comment_is_ignored() -> None:
    result = instrument("<p>Hi</p><!-- </body> -->")

    assert re.fullmatch(r"<p>Hi</p><!-- </body> --><a [^>]+></a><img [^>]+/>", result.html)


def test_open_pixel_is_small_and_visible_to_clients() -> None:
    result = instrument("<body></body>")

    images = [attributes for tag, attributes in elements(result.html) if tag == "img"]
    assert len(images) == 1
    pixel = images[0]
    assert pixel["width"] == "1"
    assert pixel["height"] == "1"
    assert pixel["alt"] == ""
    assert "display:none" not in (pixel["style"] or "")
    token = OPEN_URL.fullmatch(pixel["src"] or "")
    assert token is not None
    claims = verify_tracking_token(token.group(1), KEYRING, expected_kind=TrackingKind.OPEN)
    assert claims == TrackingClaims(TrackingKind.OPEN, WORKSPACE_ID, MESSAGE_ID, CONTACT_ID)


def test_honeypot_is_hidden_from_people() -> None:
    result = instrument('<body><a href="https://x.example/">x</a></body>')

    honeypots = [
        attributes
        for tag, attributes in elements(result.html)
        if tag == "a" and HONEYPOT_URL.fullmatch(attributes["href"] or "")
    ]
    assert len(honeypots) == 1
    honeypot = honeypots[0]
    assert honeypot["aria-hidden"] == "true"
    assert honeypot["tabindex"] == "-1"
    assert "display:none" in (honeypot["style"] or "")
    assert "mso-hide:all" in (honeypot["style"] or "")
    assert re.search(r"<a href=\"https://t\.example\.com/h/[^\"]+\"[^>]*></a>", result.html)
    token = HONEYPOT_URL.fullmatch(honeypot["href"] or "")
    assert token is not None
    claims = verify_tracking_token(token.group(1), KEYRING, expected_kind=TrackingKind.HONEYPOT)
    assert claims.contact_id == CONTACT_ID
    assert result.links == (TrackedLink(link_id(1, "https://x.example/"), "https://x.example/"),)


def test_campaign_id_is_in_every_token() -> None:
    result = instrument_html(
        '<body><a href="https://x.example/">x</a></body>',
        keyring=KEYRING,
        gateway_base_url=GATEWAY,
        workspace_id=WORKSPACE_ID,
        message_id=MESSAGE_ID,
        contact_id=CONTACT_ID,
        campaign_id="summer-sale",
    )

    tokens = [
        (TrackingKind.CLICK, CLICK_URL.findall(result.html)),
        (TrackingKind.OPEN, OPEN_URL.findall(result.html)),
        (TrackingKind.HONEYPOT, HONEYPOT_URL.findall(result.html)),
    ]
    for kind, found in tokens:
        assert len(found) == 1
        claims = verify_tracking_token(found[0], KEYRING, expected_kind=kind)
        assert claims.campaign_id == "summer-sale"


def test_tokens_without_campaign_id() -> None:
    result = instrument('<a href="https://x.example/">x</a>')

    claims = verify_tracking_token(CLICK_URL.findall(result.html)[0], KEYRING, expected_kind=TrackingKind.CLICK)
    assert claims.campaign_id is None


def test_base_url_trailing_slash_is_dropped() -> None:
    result = instrument_html(
        '<a href="https://x.example/">x</a>',
        keyring=KEYRING,
        gateway_base_url="https://t.example.com/",
        workspace_id=WORKSPACE_ID,
        message_id=MESSAGE_ID,
        contact_id=CONTACT_ID,
    )

    assert result.html.startswith('<a href="https://t.example.com/c/')


def test_base_url_path_is_kept() -> None:
    result = instrument_html(
        "",
        keyring=KEYRING,
        gateway_base_url="https://mail.example.com/track",
        workspace_id=WORKSPACE_ID,
        message_id=MESSAGE_ID,
        contact_id=CONTACT_ID,
    )

    assert '<a href="https://mail.example.com/track/h/' in result.html
    assert '<img src="https://mail.example.com/track/o/' in result.html


@pytest.mark.parametrize(
    "base_url",
    [
        "t.example.com",
        "ftp://t.example.com",
        "https://t.example.com/?x=1",
        "https://t.example.com/#x",
        "https://bü.example",
    ],
)
def test_invalid_base_url_is_rejected(base_url: str) -> None:
    with pytest.raises(ValueError, match=r"gateway base URL .* is invalid"):
        instrument_html(
            "",
            keyring=KEYRING,
            gateway_base_url=base_url,
            workspace_id=WORKSPACE_ID,
            message_id=MESSAGE_ID,
            contact_id=CONTACT_ID,
        )


def test_invalid_message_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="message id"):
        instrument_html(
            "",
            keyring=KEYRING,
            gateway_base_url=GATEWAY,
            workspace_id=WORKSPACE_ID,
            message_id="m" * 201,
            contact_id=CONTACT_ID,
        )


# Properties over generated documents

markup_pieces = st.sampled_from(
    [
        "<",
        ">",
        "<a",
        "<A ",
        "<area ",
        " href",
        " HREF",
        "=",
        '"',
        "'",
        "https://x.example/",
        "http://bü.example/?a=1",
        "&amp;",
        "&",
        "&copy",
        "<!--",
        "-->",
        "--!>",
        "<![if mso]>",
        "<![",
        "<!",
        "]>",
        "</",
        "body>",
        "html>",
        "<script>",
        "</script>",
        "<title>",
        " ",
        "\n",
        "\r\n",
        "/",
        "data-topmail-track=false",
        "clicktracking=off",
        "\x00",
        "\xa0",
        "%",
        "#",
        "[",
        "<?",
        "<!DOCTYPE html>",
        "&#" + "9" * 4400 + ";",
        "&#00000000065",
    ]
)
link_tags = st.sampled_from(
    [
        '<a href="https://x.example/p?a=1&amp;b=2">',
        "<A HREF='http://bü.example/Ü'>",
        "<area href=https://x.example/[0] ",
        '<a href="https://user@x.example/">',
        '<a data-topmail-track="false" href="https://x.example/">',
    ]
)
random_markup = st.lists(link_tags | markup_pieces | st.text(max_size=6), max_size=40).map("".join)


@settings(max_examples=500, deadline=None)
@given(random_markup)
def test_any_markup_instruments_consistently(document: str) -> None:
    result = instrument(document)

    event("tracked links" if result.links else "no tracked link")
    assert redirect_targets(result.html) == [link.destination for link in result.links]
    assert len(OPEN_URL.findall(result.html)) == 1
    assert len(HONEYPOT_URL.findall(result.html)) == 1
    for token in OPEN_URL.findall(result.html):
        verify_tracking_token(token, KEYRING, expected_kind=TrackingKind.OPEN)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_instruments_without_error(document: str) -> None:
    result = instrument(document)

    assert redirect_targets(result.html) == [link.destination for link in result.links]


@settings(max_examples=300, deadline=None)
@given(random_markup.filter(lambda document: "href" not in document.lower() and "data-topmail" not in document))
def test_markup_without_links_is_kept(document: str) -> None:
    result = instrument(document)

    assert without_hidden_elements(result.html) == document


destinations = st.builds(
    lambda host, path, query: f"https://{host}/{path}?{query}",
    st.sampled_from(["shop.example.com", "bücher.example", "127.0.0.1:8080"]),
    st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=20),
    st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=20),
)
link_templates = st.sampled_from(['<a href="{}">x</a>', "<A HREF='{}'>", '<area alt="" href="{}"/>'])
text_pieces = st.sampled_from(["<p>Hi</p>", "\n", "<!-- note -->", "Tom &amp; Jerry", "<br>", "<b>"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(text_pieces, link_templates, destinations), max_size=8))
def test_redirects_match_written_links(parts: list[tuple[str, str, str]]) -> None:
    document = "".join(text + template.format(html.escape(url)) for text, template, url in parts)

    result = instrument(document)

    # Browsers, and so instrumentation, drop trailing spaces from an href.
    assert redirect_targets(result.html) == [normalize_destination(url.rstrip(" ")) for _, _, url in parts]
