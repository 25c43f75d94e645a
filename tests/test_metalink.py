"""Metalink 4 (RFC 5854): reading hand-written and hostile documents, writing them for
real releases, the ``create --meta4`` command, and aria2 downloading from what we wrote."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opendistro.cli import main
from opendistro.create import create_torrent
from opendistro.errors import (
    ConfigError,
    IntegrityError,
    MetainfoError,
    MetalinkError,
    StorageError,
    UnsafePathError,
)
from opendistro.metainfo import Metainfo, Version
from opendistro.mirrors.metalink import (
    HASH_SIZES,
    LOWEST_PRIORITY,
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_METALINK_SIZE,
    Digest,
    Metalink,
    MetalinkFile,
    MetaUrl,
    MirrorSpec,
    MirrorUrl,
    Pieces,
    Signature,
    build_metalink,
    parse_metalink,
    render_metalink,
    write_metalink,
)
from opendistro.paths import validate_path

NS = "urn:ietf:params:xml:ns:metalink"
KIB = 1024

# The content the hand-written documents describe, so their hashes are real.
CONTENT = bytes(range(256)) * 40  # 10240 bytes: three 4 KiB pieces, the last short
PIECE = 4096
SHA256 = hashlib.sha256(CONTENT).hexdigest()
SHA1 = hashlib.sha1(CONTENT).hexdigest()
PIECE_SHA1 = [hashlib.sha1(CONTENT[i : i + PIECE]).hexdigest() for i in range(0, 10240, PIECE)]
PGP = """-----BEGIN PGP SIGNATURE-----

iQEcBAABAgAGBQJMGrnKAAoJEHRNz4A2lNNzh3oH/3IJAxU5YXZ0hYQ1nNHT5ko8
=mL8k
-----END PGP SIGNATURE-----"""


def rfc_document() -> bytes:
    """In the shape of RFC 5854's examples, with every element we read."""
    pieces = "\n".join(f"        <hash>{value}</hash>" for value in PIECE_SHA1)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="{NS}">
  <generator>MirrorBrain/2.10.0</generator>
  <origin dynamic="true">http://www.example.com/example.ext.meta4</origin>
  <published>2010-05-01T12:15:02Z</published>
  <updated>2010-05-02T08:00:00+02:00</updated>
  <file name="example.ext">
    <identity>Example</identity>
    <version>1.0</version>
    <description>A description of the example file for download.</description>
    <size>{len(CONTENT)}</size>
    <hash type="md5">0123456789abcdef0123456789abcdef</hash>
    <hash type="sha-1">{SHA1}</hash>
    <hash type="sha-256">{SHA256}</hash>
    <pieces length="{PIECE}" type="sha-1">
{pieces}
    </pieces>
    <signature mediatype="application/pgp-signature">
{PGP}
    </signature>
    <url location="us" priority="3">http://www3.example.com/example.ext</url>
    <url location="de" priority="1">http://www1.example.com/example.ext</url>
    <url>https://www4.example.com/example.ext</url>
    <url location="jp" priority="2">ftp://ftp.example.com/example.ext</url>
    <url location="uk" priority="1">https://www2.example.com/example.ext</url>
    <metaurl mediatype="torrent" priority="2">http://example.com/example.ext.torrent</metaurl>
  </file>
</metalink>
""".encode()


def v4(body: str) -> bytes:
    return f'<?xml version="1.0"?><metalink xmlns="{NS}">{body}</metalink>'.encode()


def v4_file(name: str = "a.bin", inner: str = "<url>http://m.example/a.bin</url>") -> bytes:
    return v4(f'<file name="{name}">{inner}</file>')


# -- reading ------------------------------------------------------------------------------


def test_reads_an_rfc_style_document() -> None:
    metalink = parse_metalink(rfc_document())
    assert metalink.generator == "MirrorBrain/2.10.0"
    assert metalink.origin == "http://www.example.com/example.ext.meta4"
    assert metalink.dynamic is True
    assert metalink.published == datetime(2010, 5, 1, 12, 15, 2, tzinfo=UTC)
    assert metalink.updated == datetime(2010, 5, 2, 6, 0, tzinfo=UTC)
    (entry,) = metalink.files
    assert entry.path == ("example.ext",)
    assert entry.name == "example.ext"
    assert (entry.identity, entry.version) == ("Example", "1.0")
    assert entry.description == "A description of the example file for download."
    assert entry.size == len(CONTENT)
    # md5 is not one we check, so it is not kept.
    assert [digest.algorithm for digest in entry.hashes] == ["sha-1", "sha-256"]
    assert entry.digest("sha-256") == hashlib.sha256(CONTENT).digest()
    assert entry.digest("sha-1") == hashlib.sha1(CONTENT).digest()
    assert entry.digest("md5") is None
    assert entry.pieces == (
        Pieces("sha-1", PIECE, tuple(bytes.fromhex(value) for value in PIECE_SHA1)),
    )
    assert entry.signature == Signature("application/pgp-signature", PGP)
    assert entry.metaurls == (
        MetaUrl("http://example.com/example.ext.torrent", "torrent", 2, None),
    )
    assert entry.skipped_urls == ("ftp://ftp.example.com/example.ext",)


def test_mirrors_are_sorted_by_priority_with_missing_as_lowest() -> None:
    (entry,) = parse_metalink(rfc_document()).files
    # Lower is preferred, ties keep the document's order, no priority ranks last.
    assert entry.urls == (
        MirrorUrl("http://www1.example.com/example.ext", 1, "de"),
        MirrorUrl("https://www2.example.com/example.ext", 1, "uk"),
        MirrorUrl("http://www3.example.com/example.ext", 3, "us"),
        MirrorUrl("https://www4.example.com/example.ext", LOWEST_PRIORITY, None),
    )


def test_piece_hashes_match_the_content_they_describe() -> None:
    (entry,) = parse_metalink(rfc_document()).files
    (pieces,) = entry.pieces
    chunks = [CONTENT[i : i + pieces.length] for i in range(0, len(CONTENT), pieces.length)]
    assert [hashlib.sha1(chunk).digest() for chunk in chunks] == list(pieces.hashes)


def test_prefixes_whitespace_case_and_extensions_do_not_matter() -> None:
    pieces = "".join(f"<ml:hash>\n\t{value.upper()}\r\n</ml:hash>" for value in PIECE_SHA1)
    document = f"""<?xml version='1.0' encoding='utf-8'?>
<!-- a comment --><?some-instruction with data?>
<ml:metalink xmlns:ml="{NS}" xmlns:x="urn:example:ext">
 <x:mirrorstats><x:hit count="5"><ml:file name="not-a-file"/></x:hit></x:mirrorstats>
 <ml:file
      name="dir/example.ext"  >
   <ml:size>
      {len(CONTENT)}
   </ml:size>
   <ml:hash type="SHA-256">  {SHA256.upper()}  </ml:hash>
   <x:note>ignored</x:note>
   <ml:pieces type="sha-1" length=" {PIECE} ">{pieces}</ml:pieces>
   <ml:url priority=" 7 " location="DE">
       http://mirror.example/dir/example.ext?x=1&amp;y=2
   </ml:url>
   <ml:unknown-future-element>ignored too</ml:unknown-future-element>
 </ml:file>
</ml:metalink>
""".replace("\n", "\r\n").encode()
    (entry,) = parse_metalink(document).files
    assert entry.path == ("dir", "example.ext")
    assert entry.size == len(CONTENT)
    assert entry.digest("sha-256") == hashlib.sha256(CONTENT).digest()
    assert entry.pieces[0].hashes[2] == hashlib.sha1(CONTENT[2 * PIECE :]).digest()
    assert entry.urls == (MirrorUrl("http://mirror.example/dir/example.ext?x=1&y=2", 7, "DE"),)


def test_reads_utf16_and_non_ascii_names() -> None:
    document = f"""<?xml version="1.0" encoding="UTF-16"?>
<metalink xmlns="{NS}"><file name="Ünïcødé/файл.iso">
<url>https://mirror.example/%C3%9C/file.iso</url></file></metalink>""".encode("utf-16")
    (entry,) = parse_metalink(document).files
    assert entry.path == ("Ünïcødé", "файл.iso")


def test_metaurl_name_and_several_files() -> None:
    document = v4(
        '<file name="rel/a.bin"><metaurl mediatype="torrent" name="rel/a.bin">'
        "https://t.example/rel.torrent</metaurl></file>"
        '<file name="rel/sub/b.bin"><url priority="2">http://m.example/rel/sub/b.bin</url>'
        '<metaurl mediatype="torrent" name="rel/sub/b.bin" priority="1">'
        "https://t.example/rel.torrent</metaurl></file>"
    )
    first, second = parse_metalink(document).files
    assert first.metaurls == (
        MetaUrl("https://t.example/rel.torrent", "torrent", 999_999, "rel/a.bin"),
    )
    assert first.urls == ()
    assert second.path == ("rel", "sub", "b.bin")
    assert second.metaurls[0].name == "rel/sub/b.bin"
    assert second.metaurls[0].priority == 1


def test_reads_metalink_3() -> None:
    document = f"""<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" generator="Metalink Editor"
          pubdate="Thu, 01 Jul 2010 08:00:00 GMT" type="dynamic"
          origin="http://example.com/example.metalink">
  <files>
    <file name="example.ext">
      <version>1.0</version>
      <size>{len(CONTENT)}</size>
      <verification>
        <hash type="md5">0123456789abcdef0123456789abcdef</hash>
        <hash type="sha256">{SHA256}</hash>
        <pieces length="{PIECE}" type="sha1">
          <hash piece="2">{PIECE_SHA1[2]}</hash>
          <hash piece="0">{PIECE_SHA1[0]}</hash>
          <hash piece="1">{PIECE_SHA1[1]}</hash>
        </pieces>
        <signature type="pgp">{PGP}</signature>
      </verification>
      <resources>
        <url type="http" location="us" preference="90">http://us.example.com/example.ext</url>
        <url type="https" location="de" preference="100">https://de.example.com/example.ext</url>
        <url type="ftp" preference="95">ftp://ftp.example.com/example.ext</url>
        <url type="bittorrent" preference="100">http://example.com/example.torrent</url>
      </resources>
    </file>
  </files>
</metalink>""".encode()
    metalink = parse_metalink(document)
    assert metalink.generator == "Metalink Editor"
    assert metalink.published == datetime(2010, 7, 1, 8, 0, tzinfo=UTC)
    assert metalink.dynamic is True
    assert metalink.origin == "http://example.com/example.metalink"
    (entry,) = metalink.files
    assert entry.version == "1.0"
    assert entry.hashes == (Digest("sha-256", hashlib.sha256(CONTENT).digest()),)
    assert entry.pieces[0].hashes == tuple(bytes.fromhex(value) for value in PIECE_SHA1)
    assert entry.signature == Signature("application/pgp-signature", PGP)
    # Metalink 3 preference 100 is the best: priority 101 - preference.
    assert entry.urls == (
        MirrorUrl("https://de.example.com/example.ext", 1, "de"),
        MirrorUrl("http://us.example.com/example.ext", 11, "us"),
    )
    assert entry.metaurls == (MetaUrl("http://example.com/example.torrent", "torrent", 1, None),)
    assert entry.skipped_urls == ("ftp://ftp.example.com/example.ext",)


def test_parsed_documents_render_and_read_back_equal() -> None:
    document = rfc_document().replace(b"ftp://ftp.example.com", b"http://ftp.example.com")
    metalink = parse_metalink(document)
    assert parse_metalink(render_metalink(metalink)) == metalink


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"", "not well-formed"),
        (b"not xml at all", "not well-formed"),
        (v4_file()[:-5], "not well-formed"),
        (b'<metalink><file name="a"/></metalink>', "not a Metalink document"),
        (b'<metalink xmlns="urn:ietf:params:xml:ns:metalink4"/>', "not a Metalink document"),
        (b'<rss xmlns="urn:ietf:params:xml:ns:metalink"/>', "not a Metalink document"),
        (v4(""), "no files"),
        (v4('<file name="a.bin"><size>1</size></file>'), "no url or metaurl"),
        (v4_file(inner="<url></url>"), "empty URL"),
        (v4_file(inner='<url priority="0">http://m.example/a</url>'), "outside 1..999999"),
        (v4_file(inner='<url priority="1000000">http://m.example/a</url>'), "outside"),
        (v4_file(inner='<url priority="high">http://m.example/a</url>'), "whole number"),
        (v4_file(inner='<url priority="-1">http://m.example/a</url>'), "whole number"),
        (v4_file(inner="<size>-5</size><url>http://m.example/a</url>"), "whole number"),
        (v4_file(inner="<size>1</size><size>1</size><url>http://m/a</url>"), "more than one"),
        (v4_file(inner='<hash type="sha-256">abcd</hash><url>http://m/a</url>'), "digest"),
        (v4_file(inner=f'<hash type="sha-1">{SHA256}</hash><url>http://m/a</url>'), "digest"),
        (v4_file(inner=f'<hash type="sha-256">{"zz" * 32}</hash><url>http://m/a</url>'), "hex"),
        (v4_file(inner=f"<hash>{SHA256}</hash><url>http://m/a</url>"), "without a type"),
        (
            v4_file(
                inner=f'<hash type="sha-256">{SHA256}</hash>'
                f'<hash type="sha-256">{"00" * 32}</hash><url>http://m/a</url>'
            ),
            "two different sha-256",
        ),
        (
            v4_file(
                inner=f'<size>{len(CONTENT)}</size><pieces type="sha-1" length="{PIECE}">'
                f"<hash>{PIECE_SHA1[0]}</hash></pieces><url>http://m/a</url>"
            ),
            "1 piece hashes for 10240 bytes",
        ),
        (v4_file(inner='<pieces type="sha-1"></pieces><url>http://m/a</url>'), "length"),
        (v4_file(inner='<pieces type="sha-1" length="0"></pieces><url>http://m/a</url>'), "1.."),
        (v4_file(inner="<signature>x</signature><url>http://m/a</url>"), "mediatype"),
        (v4_file(inner="<metaurl>http://t/a.torrent</metaurl>"), "mediatype"),
        (
            v4(
                '<file name="a"><url>http://m/a</url></file><file name="a"><url>http://m/a</url></file>'
            ),
            "twice",
        ),
        (
            v4(
                '<file name="a"><url>http://m/a</url></file><file name="a/b"><url>http://m/b</url></file>'
            ),
            "both a file and a folder",
        ),
        (v4("<file><url>http://m/a</url></file>"), "missing file name"),
        (
            v4("<published>2010-05-01</published>" + '<file name="a"><url>http://m/a</url></file>'),
            "time zone",
        ),
        (
            v4("<published>yesterday</published>" + '<file name="a"><url>http://m/a</url></file>'),
            "RFC 3339",
        ),
        (
            v4(
                '<origin dynamic="maybe">http://o/a.meta4</origin><file name="a"><url>http://m/a</url></file>'
            ),
            "dynamic",
        ),
    ],
)
def test_malformed_documents_raise_metalink_error(document: bytes, message: str) -> None:
    with pytest.raises(MetalinkError, match=re.escape(message)):
        parse_metalink(document)


# -- hostile input ------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
 <file name="a"><description>&lol9;</description><url>http://m/a</url></file>
</metalink>"""


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        v4_file().replace(b"?>", b"?><!DOCTYPE metalink>", 1),
        v4_file(inner="<description>&xxe;</description><url>http://m/a</url>").replace(
            b"?>", b'?><!DOCTYPE metalink [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', 1
        ),
        v4_file().replace(b"?>", b'?><!DOCTYPE metalink SYSTEM "http://127.0.0.1:9/evil.dtd">', 1),
        v4_file().replace(
            b"?>",
            b'?><!DOCTYPE m [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>',
            1,
        ),
        v4_file().replace(b"?>", b'?><!DOCTYPE m [<!NOTATION n SYSTEM "x">]>', 1),
    ],
    ids=[
        "billion-laughs",
        "bare-doctype",
        "external-entity",
        "external-dtd",
        "parameter-entity",
        "notation",
    ],
)
def test_dtds_and_entities_are_refused(document: bytes) -> None:
    with pytest.raises(MetalinkError, match="DOCTYPE, entity and notation declarations"):
        parse_metalink(document)


def test_undeclared_entities_are_refused() -> None:
    with pytest.raises(MetalinkError, match="undefined entity"):
        parse_metalink(v4_file(inner="<description>&xxe;</description><url>http://m/a</url>"))


def test_predefined_entities_and_character_references_still_work() -> None:
    (entry,) = parse_metalink(
        v4_file(inner="<description>&lt;&amp;&#x263A;&#65;</description><url>http://m/a</url>")
    ).files
    assert entry.description == "<&\u263aA"


def test_oversized_input_is_refused_before_parsing() -> None:
    document = v4_file(inner="<url>http://m/a</url>" + " " * MAX_METALINK_SIZE)
    with pytest.raises(MetalinkError, match="larger than"):
        parse_metalink(document)


def test_deep_nesting_is_refused() -> None:
    deep = "<x:a>" * (MAX_DEPTH + 1) + "</x:a>" * (MAX_DEPTH + 1)
    document = v4(f'<file name="a" xmlns:x="urn:ext"><url>http://m/a</url>{deep}</file>')
    with pytest.raises(MetalinkError, match="nested deeper"):
        parse_metalink(document)


@pytest.mark.parametrize("namespace", [NS, "urn:an-extension"])
def test_element_floods_are_refused(namespace: str) -> None:
    flood = "<e/>" * MAX_ELEMENTS
    document = v4(f'<file name="a"><url>http://m/a</url><z xmlns="{namespace}">{flood}</z></file>')
    with pytest.raises(MetalinkError, match=f"more than {MAX_ELEMENTS} XML elements"):
        parse_metalink(document)


def test_unreadable_encodings_are_a_metalink_error() -> None:
    for encoding in ("shift_jis", "no-such-encoding"):
        document = f'<?xml version="1.0" encoding="{encoding}"?><metalink xmlns="{NS}"/>'
        with pytest.raises(MetalinkError):
            parse_metalink(document.encode())


@pytest.mark.parametrize(
    "name",
    [
        "../evil.sh",
        "a/../../evil.sh",
        "/etc/passwd",
        "dir//file",
        "dir/",
        ".",
        "C:evil.exe",
        "dir\\..\\evil",
        "NUL.txt",
        "com1",
        "a\x00b",
    ],
)
def test_unsafe_file_names_are_refused(name: str) -> None:
    document = v4(
        '<file name="NAME"><url>http://m/a</url></file>'.replace(
            "NAME", name.replace("\x00", "&#0;")
        )
    )
    with pytest.raises(MetainfoError) as caught:
        parse_metalink(document)
    if "\x00" not in name:  # expat itself refuses a NUL character reference
        assert isinstance(caught.value, UnsafePathError)


def test_unsafe_metaurl_names_are_refused() -> None:
    document = v4_file(
        inner='<metaurl mediatype="torrent" name="../../x">http://t.example/a.torrent</metaurl>'
    )
    with pytest.raises(UnsafePathError):
        parse_metalink(document)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/plain,hello",
        "gopher://old.example/",
        "mirror.example/a.bin",
        "/a.bin",
        "http:///no-host",
        "http://m.example:99999/a",
        "http://m.example/a b",
        "http://m.example/a\tb",
        "http://" + "a" * 9000,
    ],
)
def test_urls_other_than_http_are_refused(url: str) -> None:
    for inner in (
        f"<url>{url}</url>",
        f'<url>http://m.example/a</url><metaurl mediatype="torrent">{url}</metaurl>',
    ):
        with pytest.raises(MetalinkError, match="URL"):
            parse_metalink(v4_file(inner=inner))
    origin = f'<origin>{url}</origin><file name="a"><url>http://m/a</url></file>'
    with pytest.raises(MetalinkError, match="URL"):
        parse_metalink(v4(origin))


def test_ftp_and_other_known_schemes_are_skipped_with_a_note() -> None:
    inner = (
        "<url>ftp://ftp.example/a</url><url>rsync://r.example/a</url>"
        '<metaurl mediatype="torrent">magnet:?xt=urn:btih:' + "0" * 40 + "</metaurl>"
    )
    (entry,) = parse_metalink(v4_file(inner=inner)).files
    assert entry.urls == () and entry.metaurls == ()
    assert entry.skipped_urls == (
        "ftp://ftp.example/a",
        "rsync://r.example/a",
        "magnet:?xt=urn:btih:" + "0" * 40,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_documents_only_raise_typed_errors(data: st.DataObject) -> None:
    document = bytearray(rfc_document())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(document) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            document[position] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del document[position : position + data.draw(st.integers(1, 40))]
        else:
            insert = data.draw(
                st.sampled_from([b"<", b">", b"&", b'"', b"</file>", b"<!DOCTYPE x>", b"\xff"])
            )
            document[position:position] = insert
    try:
        metalink = parse_metalink(bytes(document))
    except MetainfoError:  # MetalinkError, or UnsafePathError for a damaged name
        return
    # Whatever still parses keeps the parser's promises.
    for entry in metalink.files:
        assert validate_path(entry.path) == entry.path
        urls = [source.url for source in entry.urls] + [meta.url for meta in entry.metaurls]
        assert all(urlsplit(url).scheme.lower() in ("http", "https") for url in urls)


# -- a generated model survives render and parse ----------------------------------------

_XML_CHARS = st.characters(
    blacklist_categories=["Cs"],
    blacklist_characters="\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f"
    "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\ufffe\uffff",
)
_TEXT = st.text(_XML_CHARS, min_size=1, max_size=30).filter(lambda text: text == text.strip())
_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}\.example", fullmatch=True)
_URL = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https"]),
    _HOST,
    st.from_regex(r"[A-Za-z0-9._~%/?=&-]{0,30}", fullmatch=True),
)
_PRIORITY = st.integers(1, LOWEST_PRIORITY)


@st.composite
def _files(draw: st.DrawFn, index: int) -> MetalinkFile:
    size = draw(st.none() | st.integers(0, 20_000))
    algorithms = draw(st.lists(st.sampled_from(sorted(HASH_SIZES)), unique=True, max_size=3))
    pieces = []
    for algorithm in draw(st.lists(st.sampled_from(sorted(HASH_SIZES)), max_size=2)):
        length = draw(st.integers(max(1, -(-(size or 0) // 8)), 8192))  # at most 8 pieces
        count = draw(st.integers(0, 5)) if size is None else -(-size // length)
        digests = draw(
            st.lists(
                st.binary(min_size=HASH_SIZES[algorithm], max_size=HASH_SIZES[algorithm]),
                min_size=count,
                max_size=count,
            )
        )
        pieces.append(Pieces(algorithm, length, tuple(digests)))
    urls = draw(st.lists(st.builds(MirrorUrl, _URL, _PRIORITY, st.none() | _TEXT), max_size=4))
    metaurls = draw(
        st.lists(
            st.builds(MetaUrl, _URL, _TEXT, _PRIORITY, st.none() | st.just(f"rel/f{index}")),
            min_size=0 if urls else 1,
            max_size=2,
        )
    )
    return MetalinkFile(
        path=(*draw(st.sampled_from([(), ("d0",), ("d0", "d1")])), f"f{index} ü&<>'\".bin"),
        size=size,
        identity=draw(st.none() | _TEXT),
        version=draw(st.none() | _TEXT),
        description=draw(st.none() | st.text(_XML_CHARS, max_size=60).map(str.strip).filter(bool)),
        hashes=tuple(
            Digest(name, draw(st.binary(min_size=HASH_SIZES[name], max_size=HASH_SIZES[name])))
            for name in algorithms
        ),
        pieces=tuple(pieces),
        signature=draw(st.none() | st.builds(Signature, _TEXT, _TEXT)),
        urls=tuple(sorted(urls, key=lambda url: url.priority)),
        metaurls=tuple(sorted(metaurls, key=lambda url: url.priority)),
    )


@st.composite
def _metalinks(draw: st.DrawFn) -> Metalink:
    count = draw(st.integers(1, 3))
    zone = st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    )
    moment = st.none() | st.datetimes(timezones=zone)
    origin = draw(st.none() | _URL)
    return Metalink(
        files=tuple(draw(_files(index)) for index in range(count)),
        generator=draw(st.none() | _TEXT),
        published=draw(moment),
        updated=draw(moment),
        origin=origin,
        dynamic=draw(st.booleans()) if origin else False,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_metalinks())
def test_render_then_parse_gives_back_the_same_model(metalink: Metalink) -> None:
    assert parse_metalink(render_metalink(metalink)) == metalink


def test_render_refuses_text_xml_cannot_carry() -> None:
    entry = MetalinkFile(path=("a",), description="bell\x07", urls=(MirrorUrl("http://m/a"),))
    with pytest.raises(MetalinkError, match="XML cannot carry"):
        render_metalink(Metalink(files=(entry,)))


# -- describing real releases ------------------------------------------------------------

MakeRelease = Callable[..., Path]


@pytest.mark.parametrize("version", ["v1", "hybrid", "v2"])
def test_single_file_release(make_release: MakeRelease, version: Version) -> None:
    source = make_release("tool-1.0.iso", sizes=(300_000,))
    metainfo = create_torrent(source, version=version, piece_length=64 * KIB)
    published = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    document = write_metalink(
        metainfo,
        source.parent,
        mirrors=["https://a.example/pub/", ("http://b.example/tool.iso", "de", 7)],
        torrent_url="https://a.example/pub/tool-1.0.iso.torrent",
        published=published,
    )
    metalink = parse_metalink(document)
    assert metalink.published == published
    assert metalink.generator is not None and metalink.generator.startswith("opendistro/")
    (entry,) = metalink.files
    data = source.read_bytes()
    assert entry.path == ("tool-1.0.iso",)
    assert entry.size == len(data)
    assert entry.identity == "tool-1.0.iso"
    assert entry.hashes == (Digest("sha-256", hashlib.sha256(data).digest()),)
    # BEP 19: a base ending in / is a folder holding the file; otherwise it is the file.
    assert entry.urls == (
        MirrorUrl("https://a.example/pub/tool-1.0.iso", 1, None),
        MirrorUrl("http://b.example/tool.iso", 7, "de"),
    )
    assert entry.metaurls == (
        MetaUrl("https://a.example/pub/tool-1.0.iso.torrent", "torrent", 1, None),
    )
    if version == "v2":
        assert entry.pieces == ()  # v2 piece hashes are merkle roots, not of the bytes
    else:
        (pieces,) = entry.pieces
        assert (pieces.algorithm, pieces.length) == ("sha-1", 64 * KIB)
        expected = [
            hashlib.sha1(data[i : i + 64 * KIB]).digest() for i in range(0, len(data), 64 * KIB)
        ]
        assert list(pieces.hashes) == expected
    assert parse_metalink(render_metalink(metalink)) == metalink
    assert (
        build_metalink(
            metainfo,
            source.parent,
            mirrors=["https://a.example/pub/", ("http://b.example/tool.iso", "de", 7)],
            torrent_url="https://a.example/pub/tool-1.0.iso.torrent",
            published=published,
        )
        == metalink
    )


@pytest.mark.parametrize("version", ["v1", "hybrid", "v2"])
def test_multi_file_release(make_release: MakeRelease, version: Version) -> None:
    # Sizes off piece boundaries, so hybrid and v2 torrents have padding to skip.
    release = make_release("distro-2", sizes=(70_000, 0, 16 * KIB, 100_001))
    metainfo = create_torrent(release, version=version, piece_length=32 * KIB)
    mirrors: list[MirrorSpec] = [("https://m1.example/releases", "us", 3), "http://m2.example/x/"]
    metalink = parse_metalink(
        write_metalink(
            metainfo, release.parent, mirrors=mirrors, torrent_url="https://t.example/d.torrent"
        )
    )
    on_disk = sorted(path for path in release.rglob("*") if path.is_file())
    assert len(metalink.files) == len(on_disk) == len(metainfo.data_files())
    for entry in metalink.files:
        source = release.parent.joinpath(*entry.path)
        assert entry.path[0] == "distro-2"
        data = source.read_bytes()
        assert entry.size == len(data)
        assert entry.digest("sha-256") == hashlib.sha256(data).digest()
        assert entry.pieces == ()  # torrent pieces do not line up with each file
        assert [url.url for url in entry.urls] == [
            f"http://m2.example/x/{entry.name}",  # a plain URL ranks by its position: 2
            f"https://m1.example/releases/{entry.name}",
        ]
        assert [(url.priority, url.location) for url in entry.urls] == [(2, None), (3, "us")]
        assert entry.metaurls == (MetaUrl("https://t.example/d.torrent", "torrent", 1, entry.name),)


def test_names_are_percent_encoded_in_urls(tmp_path: Path) -> None:
    release = tmp_path / "My Release #1"
    (release / "docs & notes").mkdir(parents=True)
    (release / "docs & notes" / "read me?.txt").write_bytes(b"hello")
    (release / "100%.bin").write_bytes(b"x" * 1000)
    metainfo = create_torrent(release, piece_length=16 * KIB)
    metalink = parse_metalink(write_metalink(metainfo, tmp_path, mirrors=["https://m.example/r"]))
    urls = {entry.name: entry.urls[0].url for entry in metalink.files}
    assert urls == {
        "My Release #1/100%.bin": "https://m.example/r/My%20Release%20%231/100%25.bin",
        "My Release #1/docs & notes/read me?.txt": (
            "https://m.example/r/My%20Release%20%231/docs%20%26%20notes/read%20me%3F.txt"
        ),
    }


def test_data_that_differs_from_the_torrent_is_refused(make_release: MakeRelease) -> None:
    source = make_release("one.bin", sizes=(100_000,))
    metainfo = create_torrent(source, version="hybrid", piece_length=16 * KIB)
    data = bytearray(source.read_bytes())
    data[50_000] ^= 1
    source.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="piece 3"):
        write_metalink(metainfo, source.parent, mirrors=["http://m.example/"])
    source.write_bytes(bytes(data[:-1]))
    with pytest.raises(IntegrityError, match="99999 bytes"):
        write_metalink(metainfo, source.parent, mirrors=["http://m.example/"])
    source.unlink()
    with pytest.raises(StorageError, match="cannot read"):
        write_metalink(metainfo, source.parent, mirrors=["http://m.example/"])


def test_v2_data_is_checked_against_the_file_roots(make_release: MakeRelease) -> None:
    release = make_release("pack", sizes=(40_000, 90_000))
    metainfo = create_torrent(release, version="v2", piece_length=16 * KIB)
    victim = release / "dir1" / "file1.bin"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="v2 hashes"):
        write_metalink(metainfo, release.parent, mirrors=["http://m.example/"])


@pytest.mark.parametrize(
    ("mirrors", "torrent_url", "message"),
    [
        ([], None, "at least one mirror"),
        (["ftp://m.example/pub/"], None, "only http and https"),
        (["javascript:alert(1)"], None, "not allowed"),
        (["file:///srv/pub/"], None, "not allowed"),
        (["https://m.example/"], "file:///tmp/x.torrent", "not allowed"),
        ([("https://m.example/", None, 0)], None, "outside 1..999999"),
        ([("https://m.example/", " ", 1)], None, "location"),
        ("https://m.example/", None, "not one string"),
    ],
)
def test_bad_writer_arguments_are_config_errors(
    make_release: MakeRelease, mirrors: list[str], torrent_url: str | None, message: str
) -> None:
    source = make_release("a.bin", sizes=(1000,))
    metainfo = create_torrent(source)
    with pytest.raises(ConfigError, match=re.escape(message)):
        write_metalink(metainfo, source.parent, mirrors=mirrors, torrent_url=torrent_url)


def test_published_needs_a_time_zone(make_release: MakeRelease) -> None:
    source = make_release("a.bin", sizes=(1000,))
    with pytest.raises(ConfigError, match="time zone"):
        write_metalink(
            create_torrent(source),
            source.parent,
            mirrors=["http://m/"],
            published=datetime(2024, 1, 1),
        )


def test_a_torrent_url_alone_is_enough(make_release: MakeRelease) -> None:
    source = make_release("a.bin", sizes=(1000,))
    metalink = build_metalink(
        create_torrent(source), source.parent, torrent_url="https://t/a.torrent"
    )
    assert metalink.files[0].urls == ()
    assert metalink.files[0].metaurls[0].url == "https://t/a.torrent"
    assert parse_metalink(render_metalink(metalink)) == metalink


# -- the command line ---------------------------------------------------------------------


def test_cli_create_writes_a_meta4(
    make_release: MakeRelease, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = make_release("suite-3", sizes=(50_000, 20_000, 1))
    torrent = tmp_path / "out" / "suite-3.torrent"
    meta4 = tmp_path / "out" / "suite-3.meta4"
    torrent.parent.mkdir()
    code = main(
        [
            "create", str(release), "-o", str(torrent),
            "--webseed", "https://m1.example/pub/",
            "--webseed", "http://m2.example/mirror",
            "--meta4", str(meta4),
            "--torrent-url", "https://m1.example/pub/suite-3.torrent",
            "--json",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["meta4"] == str(meta4)
    metainfo = Metainfo.from_file(torrent)
    metalink = parse_metalink(meta4.read_bytes())
    assert [entry.path for entry in metalink.files] == [
        (metainfo.name, *entry.path) for entry in metainfo.data_files()
    ]
    for entry in metalink.files:
        data = release.parent.joinpath(*entry.path).read_bytes()
        assert entry.digest("sha-256") == hashlib.sha256(data).digest()
        assert [url.url for url in entry.urls] == [
            f"https://m1.example/pub/{entry.name}",
            f"http://m2.example/mirror/{entry.name}",
        ]
        assert entry.metaurls[0].url == "https://m1.example/pub/suite-3.torrent"


def test_cli_create_meta4_plain_output(
    make_release: MakeRelease, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_release("single.iso", sizes=(40_000,))
    meta4 = tmp_path / "single.iso.meta4"
    code = main(
        ["create", str(source), "-o", str(tmp_path / "s.torrent"),
         "--webseed", "https://m.example/single.iso", "--meta4", str(meta4)]
    )  # fmt: skip
    assert code == 0
    assert f"wrote {meta4} (1 mirrors)" in capsys.readouterr().out
    (entry,) = parse_metalink(meta4.read_bytes()).files
    assert entry.urls == (MirrorUrl("https://m.example/single.iso", 1, None),)
    assert entry.pieces and entry.digest("sha-256") == hashlib.sha256(source.read_bytes()).digest()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--meta4", "X.meta4"], "--meta4 needs mirrors"),
        (["--torrent-url", "https://t/a.torrent"], "--torrent-url is only used with --meta4"),
        (["--webseed", "ftp://m.example/", "--meta4", "X.meta4"], "only http and https"),
    ],
)
def test_cli_create_meta4_errors_leave_nothing_behind(
    make_release: MakeRelease,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    source = make_release("a.bin", sizes=(1000,))
    torrent = tmp_path / "a.torrent"
    extra = [str(tmp_path / arg) if arg == "X.meta4" else arg for arg in extra]
    assert main(["create", str(source), "-o", str(torrent), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not torrent.exists() and not (tmp_path / "X.meta4").exists()


# -- aria2 downloads what we describe -----------------------------------------------------


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves files under ``root`` with single-range ``Range`` support; can corrupt data."""

    protocol_version = "HTTP/1.1"
    root: Path
    corrupt = False
    ranges: list[str]

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        relative = unquote(urlsplit(self.path).path).lstrip("/")
        target = (self.root / relative).resolve()
        if not target.is_file() or not target.is_relative_to(self.root.resolve()):
            self.send_error(404)
            return
        data = target.read_bytes()
        if self.corrupt:
            data = bytes(byte ^ 0x5A for byte in data)
        start, end, status = 0, len(data) - 1, 200
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if wanted:
            self.ranges.append(wanted.group(0))
            start = int(wanted.group(1))
            end = min(int(wanted.group(2) or end), len(data) - 1)
            status = 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if send_body:
            self.wfile.write(data[start : end + 1])

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_mirror(root: Path, *, corrupt: bool = False) -> Iterator[tuple[str, list[str]]]:
    """A local Range-capable mirror of ``root``: its base URL and the ranges it served."""
    ranges: list[str] = []
    handler = type(
        "Handler", (_RangeHandler,), {"root": root, "corrupt": corrupt, "ranges": ranges}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", ranges
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def aria2c(meta4: Path, into: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("aria2c") is None:
        pytest.skip("aria2c is not installed")
    return subprocess.run(
        [
            "aria2c", "--no-conf", "--metalink-file", str(meta4), "--dir", str(into),
            "--check-integrity=true", "--allow-overwrite=true", "--auto-file-renaming=false",
            "--file-allocation=none", "--split=4", "--min-split-size=1M",
            "--max-connection-per-server=2", "--max-tries=2", "--retry-wait=1",
            "--connect-timeout=10", "--timeout=30", "--follow-torrent=false",
            "--enable-dht=false", "--bt-enable-lpd=false", "--summary-interval=0",
            "--console-log-level=warn",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.interop
def test_aria2_downloads_a_single_file_from_two_mirrors(
    make_release: MakeRelease, tmp_path: Path
) -> None:
    source = make_release("image.iso", sizes=(3 * 1024 * KIB + 12_345,))
    metainfo = create_torrent(source, version="hybrid", piece_length=256 * KIB)
    with http_mirror(source.parent) as (first, ranges), http_mirror(source.parent) as (second, _):
        meta4 = tmp_path / "image.iso.meta4"
        meta4.write_bytes(write_metalink(metainfo, source.parent, mirrors=[first, second]))
        assert parse_metalink(meta4.read_bytes()).files[0].pieces  # aria2 checks them too
        result = aria2c(meta4, tmp_path / "download")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "download" / "image.iso").read_bytes() == source.read_bytes()
    assert ranges, "aria2 should have fetched ranges from the preferred mirror"


@pytest.mark.interop
def test_aria2_lays_out_a_multi_file_release_like_a_torrent(
    make_release: MakeRelease, tmp_path: Path
) -> None:
    release = make_release("bundle", sizes=(200_000, 0, 1_500_000, 77))
    metainfo = create_torrent(release, version="v1", piece_length=64 * KIB)
    with http_mirror(release.parent) as (base, _):
        meta4 = tmp_path / "bundle.meta4"
        meta4.write_bytes(write_metalink(metainfo, release.parent, mirrors=[base]))
        result = aria2c(meta4, tmp_path / "download")
    assert result.returncode == 0, result.stdout + result.stderr
    for entry in metainfo.data_files():
        relative = Path(metainfo.name, *entry.path)
        assert (tmp_path / "download" / relative).read_bytes() == (
            release.parent / relative
        ).read_bytes()


@pytest.mark.interop
def test_aria2_rejects_a_mirror_serving_other_bytes(
    make_release: MakeRelease, tmp_path: Path
) -> None:
    # v2: no piece hashes, so only our whole-file SHA-256 can catch the bad mirror.
    source = make_release("image.iso", sizes=(300_000,))
    metainfo = create_torrent(source, version="v2")
    with http_mirror(source.parent, corrupt=True) as (base, _):
        meta4 = tmp_path / "image.iso.meta4"
        meta4.write_bytes(write_metalink(metainfo, source.parent, mirrors=[base]))
        result = aria2c(meta4, tmp_path / "download")
    assert result.returncode == 32, result.stdout + result.stderr  # "checksum validation failed"
    assert "checksum error" in result.stdout.lower()
