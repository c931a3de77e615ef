"""The nzip command, run as a user would: through a subprocess."""
import os
import subprocess
import sys

import numpy as np
import pytest


def nzip(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nzip.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_encode_info_decode(tmp_path):
    a = np.random.default_rng(0).integers(0, 100, (200, 30)).astype(np.uint8)
    np.save(tmp_path / "a.npy", a)
    r = nzip("encode", tmp_path / "a.npy", tmp_path / "a.nz", "--param", "predict=delta")
    assert r.returncode == 0, r.stderr
    assert "ratio" in r.stdout and "array/rans" in r.stdout
    r = nzip("info", tmp_path / "a.nz")
    assert r.returncode == 0 and "symbols" in r.stdout and "ratio" in r.stdout
    r = nzip("decode", tmp_path / "a.nz", tmp_path / "b.npy")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "b.npy"), a)


def test_codecs_lists_array_rans():
    r = nzip("codecs")
    assert r.returncode == 0 and "array/rans" in r.stdout


@pytest.mark.parametrize("case", ["missing", "unknown_codec", "float", "bad_param", "exists",
                                  "corrupt", "not_npy", "same_file", "fractional_int"])
def test_bad_input_one_line_no_output(tmp_path, case):
    a = np.arange(100, dtype=np.int32)
    np.save(tmp_path / "a.npy", a)
    out = tmp_path / "out.nz"
    if case == "missing":
        r = nzip("encode", tmp_path / "nope.npy", out)
    elif case == "unknown_codec":
        r = nzip("encode", tmp_path / "a.npy", out, "--codec", "image/nope")
    elif case == "float":
        np.save(tmp_path / "f.npy", a.astype(np.float32))
        r = nzip("encode", tmp_path / "f.npy", out)
    elif case == "bad_param":
        r = nzip("encode", tmp_path / "a.npy", out, "--bpp", "0.1")
    elif case == "fractional_int":  # an integer parameter is never truncated silently
        r = nzip("encode", tmp_path / "a.npy", out, "--param", "chunk=1.5")
    elif case == "exists":
        out.write_bytes(b"keep me")
        r = nzip("encode", tmp_path / "a.npy", out)
        assert out.read_bytes() == b"keep me"
        out = tmp_path / "never"
    elif case == "corrupt":
        (tmp_path / "c.nz").write_bytes(b"PK\x03\x04 not really")
        out = tmp_path / "c.npy"
        r = nzip("decode", tmp_path / "c.nz", out)
    elif case == "not_npy":
        (tmp_path / "t.npy").write_text("hello")
        r = nzip("encode", tmp_path / "t.npy", out)
        assert "not a .npy file" in r.stderr and "pickle" not in r.stderr  # (numpy's word for any file)
    else:
        r = nzip("encode", tmp_path / "a.npy", tmp_path / "a.npy")
        assert np.array_equal(np.load(tmp_path / "a.npy"), a)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nzip: error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_demo_runs():
    r = nzip("demo")
    assert r.returncode == 0, r.stderr
    assert "bit-exact: True" in r.stdout


def test_restoring_a_checkpoint_to_a_file_does_not_import_torch(tmp_path):
    """`import nzip` and `nzip decode model.nz model.safetensors` leave torch (~3 s to import)
    unloaded: torch comes in with the first nzip.weights.load or loader, not before."""
    from safetensors.numpy import save_file

    save_file({"w": np.random.default_rng(0).normal(0, 0.02, (256, 200)).astype(np.float32)},
              str(tmp_path / "m.safetensors"))
    code = ("import sys, nzip; nzip.encode(sys.argv[1], sys.argv[2]); nzip.decode(sys.argv[2], sys.argv[3]); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.safetensors"), str(tmp_path / "m.nz"),
                        str(tmp_path / "back.safetensors")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    assert (tmp_path / "back.safetensors").read_bytes() == (tmp_path / "m.safetensors").read_bytes()


def test_sigterm_removes_partial_outputs(tmp_path, monkeypatch, capsys):
    """kill / timeout / docker stop send SIGTERM: handled like Ctrl-C, nothing partial is left."""
    import signal

    from nzip import cli
    from nzip.formats import container

    np.save(tmp_path / "a.npy", np.arange(1000, dtype=np.int32))
    real = container._fill_group

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives with the temporary output half made

    monkeypatch.setattr(container, "_fill_group", killed)
    old = signal.getsignal(signal.SIGTERM)
    try:
        for out in ("o.nz", "o_dir"):
            assert cli.main(["encode", str(tmp_path / "a.npy"), str(tmp_path / out)]) == 143
            assert capsys.readouterr().err == "nzip: terminated\n"
    finally:
        signal.signal(signal.SIGTERM, old)
    assert sorted(os.listdir(tmp_path)) == ["a.npy"]


def test_storage_errors_and_folder_outputs_are_named(tmp_path, monkeypatch, capsys):
    from nzip import cli

    np.save(tmp_path / "a.npy", np.arange(10))
    assert cli.main(["encode", str(tmp_path / "a.npy"), str(tmp_path / "a.nz")]) == 0
    capsys.readouterr()
    assert cli.main(["decode", str(tmp_path / "a.nz"), str(tmp_path / "sub") + "/"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("nzip: error:") and "not " + str(tmp_path / "sub") + "/" in err  # (was blank)

    class NoCredentialsError(Exception):  # what botocore raises without credentials
        pass

    NoCredentialsError.__module__ = "botocore.exceptions"

    def fail(*a, **k):
        raise NoCredentialsError("Unable to locate credentials")

    monkeypatch.setattr(cli, "_cmd_encode", fail)
    assert cli.main(["encode", str(tmp_path / "a.npy"), "s3://bucket/a.nz"]) == 74
    assert capsys.readouterr().err == "nzip: error: storage: NoCredentialsError: Unable to locate credentials\n"


def test_usage_errors_are_one_line(tmp_path):
    for args in (["encode", "a.npy", "o.nz", "--bytes", "abc"], ["encode", "a.npy"], ["bogus"]):
        r = nzip(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("nzip: error:") and "--help" in r.stderr
