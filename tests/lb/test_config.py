"""The TOML file and flags: a good file loads, flags win, a bad one is refused with the
line that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdlab.lb.config import ConfigError, load

GOOD = """\
[listen]
port = 9190
strategy = "maglev"
send_proxy = 2

[health]
check = "http"
path = "/health"
rise = 1

[[backend]]
address = "127.0.0.1:8081"

[[backend]]
address = "127.0.0.1:8082"
weight = 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lb.toml"
    path.write_text(text)
    return path


def test_a_good_file_loads(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.listen.port == 9190
    assert config.listen.strategy == "maglev"
    assert config.listen.send_proxy == 2
    assert config.health.check == "http"
    assert config.health.fall == 3  # the default
    assert [(b.address, b.weight) for b in config.backend] == [
        ("127.0.0.1:8081", 1),
        ("127.0.0.1:8082", 3),
    ]
    assert config.admin.port == 9091


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, GOOD),
        {"listen": {"port": 9999}, "backend": [{"address": "127.0.0.1:7000"}]},
    )
    assert config.listen.port == 9999
    assert config.listen.strategy == "maglev"  # kept from the file
    assert [b.address for b in config.backend] == ["127.0.0.1:7000"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('strategy = "maglev"', 'strategy = "fastest"'), r"line 3: listen.strategy: no strategy"),
        (("rise = 1", "rise = 0"), r"line 9: health.rise: Input should be greater than or equal"),
        (("weight = 3", "weight = -1"), r"line 16: backend.1.weight: Input should be greater"),
        (('path = "/health"', 'paht = "/health"'), r"line 8: health.paht: unknown setting"),
        (
            ('address = "127.0.0.1:8082"', 'address = "localhost"'),
            r"line 15: backend.1.address: not HOST:PORT",
        ),
        (("send_proxy = 2", "send_proxy = 3"), r"line 4: listen.send_proxy: Input should be"),
        (("port = 9190", "port = 9190\nport = 9191"), r"line 3.*Cannot overwrite a value"),
        (('check = "http"', 'check = "ping"'), r"line 7: health.check: Input should be"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError, match=expected) as caught:
        load(path)
    assert str(caught.value).startswith(str(path))


def test_an_unknown_table_is_named_at_its_header(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 18: listener: unknown setting"):
        load(write(tmp_path, GOOD + "\n[listener]\nport = 1\n"))


def test_a_backend_listed_twice_is_refused(tmp_path: Path) -> None:
    twice = GOOD.replace('"127.0.0.1:8082"', '"127.0.0.1:8081"')
    with pytest.raises(ConfigError, match="listed twice"):
        load(write(tmp_path, twice))


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load(tmp_path / "nope.toml")
