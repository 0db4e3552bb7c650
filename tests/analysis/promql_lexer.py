"""A tiny PromQL lexer for tests: enough to show where string literals begin and end.

It follows Prometheus's lexer on the points that matter for injection: strings are delimited by
``"``, ``'`` or backticks; inside ``"``/``'`` a backslash escapes the next character and a raw
newline is an error; `#` starts a comment to the end of the line. Everything else is split into
identifiers, numbers/durations, and single punctuation/operator characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


class LexError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    kind: str  # IDENT | NUMBER | STRING | PUNCT | COMMENT
    text: str  # source text
    value: str = ""  # decoded value of a STRING


def decode_string(literal: str) -> str:
    """Go-style unquoting of a PromQL string literal (with its quotes)."""
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt == quote:
            out.append(quote)
            i += 2
        elif nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt == "U":
            out.append(chr(int(body[i + 2 : i + 10], 16)))
            i += 10
        elif nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        else:
            raise LexError(f"unknown escape \\{nxt}")
    return "".join(out)


_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"[0-9][0-9a-zA-Z.]*")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            end = n if end == -1 else end
            tokens.append(Token("COMMENT", text[i:end]))
            i = end
        elif char in "\"'`":
            j = i + 1
            while True:
                if j >= n:
                    raise LexError("unterminated string")
                c = text[j]
                if c == char:
                    break
                if char != "`" and c == "\n":
                    raise LexError("newline in string")
                if char != "`" and c == "\\":
                    if j + 1 >= n:
                        raise LexError("unterminated escape")
                    j += 2
                    continue
                j += 1
            literal = text[i : j + 1]
            tokens.append(Token("STRING", literal, decode_string(literal)))
            i = j + 1
        elif m := _IDENT.match(text, i):
            tokens.append(Token("IDENT", m.group()))
            i = m.end()
        elif m := _NUMBER.match(text, i):
            tokens.append(Token("NUMBER", m.group()))
            i = m.end()
        else:
            tokens.append(Token("PUNCT", char))
            i += 1
    return tokens


def shape(text: str) -> list[tuple[str, str]]:
    """The token structure with string contents blanked out: equal shapes = equal structure."""
    return [(t.kind, "" if t.kind in ("STRING", "COMMENT") else t.text) for t in tokenize(text)]


def strings(text: str) -> list[str]:
    return [t.value for t in tokenize(text) if t.kind == "STRING"]
