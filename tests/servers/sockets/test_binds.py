"""Bind syntax and the listening sockets it opens: real sockets on 127.0.0.1, ::1 and Unix paths."""

from __future__ import annotations

import os
import socket

import pytest

from wspbus import StartupError
from wspbus.servers import Bind, BindError
from wspbus.servers.sockets.binds import close_listener, open_listener, unix_file_identity


@pytest.mark.parametrize("text, canonical", [
    ("127.0.0.1:8080", "127.0.0.1:8080"),
    ("localhost:80", "localhost:80"),
    ("8080", "127.0.0.1:8080"),          # a bare port is local only
    (":8080", "0.0.0.0:8080"),           # ':PORT' is every IPv4 interface
    ("[::1]:0", "[::1]:0"),
    ("[::]:443", "[::]:443"),
    ("unix:/run/site.sock", "unix:/run/site.sock"),
    ("unix:relative.sock", "unix:relative.sock"),
    ("unix:@abstract", "unix:@abstract"),
    ("fd://3", "fd://3"),
    ("systemd:web", "systemd:web"),
    ("  127.0.0.1:1  ", "127.0.0.1:1"),
])
def test_parse_and_str_round_trip(text, canonical):
    bind = Bind.parse(text)
    assert str(bind) == canonical
    assert Bind.parse(str(bind)) == bind


def test_parsed_fields():
    assert Bind.parse("[::1]:8080") == Bind("tcp", host="::1", port=8080)
    assert Bind.parse("[::1]:8080").is_ipv6
    assert Bind.parse("unix:/x") == Bind("unix", path="/x")
    assert Bind.parse("fd://7").fd == 7
    assert Bind.parse("systemd:api").name == "api"


@pytest.mark.parametrize("text, reason", [
    ("", "it is empty"),
    ("example.com", "the port is missing"),
    ("::1:80", "needs brackets"),
    ("[::1]", "[ADDRESS]:PORT"),
    ("[nope]:80", "'nope' is not an IPv6 address"),
    ("host:http", "port 'http' is not a number"),
    ("host:70000", "port 70000 is out of range"),
    ("unix:", "socket path is missing"),
    ("fd://three", "descriptor 'three' is not a number"),
    ("systemd:", "socket name is missing"),
])
def test_bad_bind_is_one_line_naming_text_and_syntax(text, reason):
    with pytest.raises(ValueError) as caught:
        Bind.parse(text)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(text) in message and reason in message
    assert "expected HOST:PORT, [IPV6]:PORT, PORT, unix:PATH, fd://N or systemd:NAME" in message


def test_ipv4_ephemeral_port_listens():
    sock = open_listener(Bind.parse("127.0.0.1:0"))
    with sock:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port != 0
        socket.create_connection((host, port), timeout=5).close()  # the kernel queues it: listening


def test_ipv6_is_ipv6_only():
    sock = open_listener(Bind.parse("[::1]:0"))
    with sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        socket.create_connection(("::1", sock.getsockname()[1]), timeout=5).close()


def test_port_in_use_is_one_clear_line():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BindError) as caught:
            open_listener(Bind.parse("127.0.0.1:%d" % port))
    assert str(caught.value) == "cannot bind 127.0.0.1:%d: address already in use" % port
    assert isinstance(caught.value, StartupError)  # the bus logs it as one line


def test_address_not_on_this_machine():
    with pytest.raises(BindError, match=r"^cannot bind 192\.0\.2\.1:0: cannot assign requested address$"):
        open_listener(Bind.parse("192.0.2.1:0"))


def test_unix_socket_listens_and_close_removes_its_file(tmp_path):
    bind = Bind.parse("unix:%s" % (tmp_path / "site.sock"))
    sock = open_listener(bind)
    identity = unix_file_identity(bind)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(tmp_path / "site.sock"))
    close_listener(sock, bind, identity)
    assert not (tmp_path / "site.sock").exists()


def test_close_leaves_a_file_that_replaced_ours(tmp_path):
    bind = Bind.parse("unix:%s" % (tmp_path / "site.sock"))
    sock = open_listener(bind)
    identity = unix_file_identity(bind)
    os.unlink(tmp_path / "site.sock")
    (tmp_path / "site.sock").write_text("someone else's")
    close_listener(sock, bind, identity)
    assert (tmp_path / "site.sock").read_text() == "someone else's"


def test_stale_unix_socket_is_replaced(tmp_path):
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as dead:  # bound, then closed: the file stays, nobody listens
        dead.bind(path)
    assert os.path.exists(path)
    with open_listener(Bind.parse("unix:" + path)) as sock:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
        assert sock.getsockname() == path


def test_live_unix_socket_is_not_stolen(tmp_path):
    path = str(tmp_path / "live.sock")
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(path)
        other.listen()
        with pytest.raises(BindError, match="^cannot bind unix:%s: another process listens on" % path):
            open_listener(Bind.parse("unix:" + path))
        assert os.path.exists(path)


def test_non_socket_path_is_refused_and_kept(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("precious")
    with pytest.raises(BindError, match="exists and is not a socket$"):
        open_listener(Bind.parse("unix:%s" % path))
    assert path.read_text() == "precious"


def test_relative_unix_path_is_from_the_startup_directory(tmp_path, monkeypatch):
    from wspbus._process.reexec import STARTUP_CWD

    relative = os.path.relpath(tmp_path / "rel.sock", STARTUP_CWD)
    monkeypatch.chdir("/")  # as a daemon does before the servers bind
    bind = Bind.parse("unix:" + relative)
    sock = open_listener(bind)
    try:
        assert sock.getsockname() == str(tmp_path / "rel.sock")
    finally:
        close_listener(sock, bind, unix_file_identity(bind))
    assert not (tmp_path / "rel.sock").exists()


def test_abstract_unix_socket():
    bind = Bind.parse("unix:@wspbus-test-%d" % os.getpid())
    with open_listener(bind) as sock:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect("\0wspbus-test-%d" % os.getpid())
        assert sock.getsockname() == ("\0wspbus-test-%d" % os.getpid()).encode()


def test_a_second_descriptor_leaves_the_shared_blocking_mode_alone():
    """The blocking mode belongs to the open file every worker shares: a copy made to hand to a
    server must not change it (socket.dup() turns it blocking when the original's timeout is None)."""
    import fcntl
    import os

    from wspbus.servers.sockets.binds import second_descriptor

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        os.set_blocking(listener.fileno(), False)  # as another worker's event loop left it
        plain = socket.socket(fileno=os.dup(listener.fileno()))  # a worker's view: Python thinks it blocks
        with plain, second_descriptor(plain) as copy:
            assert copy.getsockname() == listener.getsockname()
            assert fcntl.fcntl(listener.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
