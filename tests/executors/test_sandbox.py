"""The real sandbox, as root, on the busybox base: one test per promise of the issue."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from pybuild.errors import SandboxError
from pybuild.executors import (
    DEFAULT_PIDS_LIMIT,
    BindMount,
    ExecResult,
    OverlayMount,
    ProcessSpec,
    SandboxExecutor,
    SecretMount,
    TmpfsMount,
    check_executor,
)
from pybuild.executors._caps import DOCKER_DEFAULT_MASK

from .conftest import PATH, RootfsFactory, host_state, processes_matching, walk_upper

pytestmark = pytest.mark.root


async def sh(executor: SandboxExecutor, rootfs, script: str, mounts=(), **fields) -> tuple[ExecResult, str, str]:
    """Run a shell script; return the result, stdout and stderr."""
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    fields.setdefault("env", (PATH,))
    fields.setdefault("network", "none")

    def collect(stream: str, chunk: bytes) -> None:
        out[stream] += chunk

    with trio.fail_after(60):
        result = await executor.run(rootfs, ProcessSpec(("/bin/sh", "-c", script), **fields), mounts, on_output=collect)
    return result, out["stdout"].decode(), out["stderr"].decode()


async def test_conformance(executor: SandboxExecutor, make_rootfs: RootfsFactory) -> None:
    await check_executor(lambda: executor, make_rootfs)


# -- the layer -----------------------------------------------------------------


async def test_upper_dir_is_the_layer_with_whiteouts(executor, make_rootfs) -> None:
    rootfs = make_rootfs()
    result, _, err = await sh(executor, rootfs, "echo hi > /a && rm /etc/passwd")
    assert result.exit_code == 0, err
    upper = Path(rootfs.upper)
    assert (upper / "a").read_text() == "hi\n"
    whiteout = os.lstat(upper / "etc" / "passwd")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    # Only the step's own change: no /etc/hosts & co., no /proc, /dev mount points.
    assert sorted(walk_upper(rootfs.upper)) == ["a", "etc", "etc/passwd"]


async def test_recreated_directory_is_opaque(executor, make_rootfs) -> None:
    rootfs = make_rootfs()
    result, _, err = await sh(executor, rootfs, "rm -rf /home && mkdir -p /home/new && echo x > /home/new/f")
    assert result.exit_code == 0, err
    assert os.getxattr(os.path.join(rootfs.upper, "home"), "trusted.overlay.opaque") == b"y"
    assert sorted(walk_upper(rootfs.upper)) == ["home", "home/new", "home/new/f"]


async def test_a_step_that_changes_nothing_leaves_an_empty_layer(executor, make_rootfs) -> None:
    rootfs = make_rootfs()
    result, out, _ = await sh(executor, rootfs, "cat /etc/hosts /etc/resolv.conf >/dev/null && ls /proc/1 >/dev/null && echo ok")
    assert (result.exit_code, out) == (0, "ok\n")
    assert walk_upper(rootfs.upper) == {}


async def test_hosts_files_are_provided(executor, make_rootfs) -> None:
    result, out, _ = await sh(
        executor,
        make_rootfs(),
        "cat /etc/hosts; cat /etc/hostname; echo x >> /etc/hosts || echo readonly",
        extra_hosts=("db:10.1.2.3",),
        etc_hostname=True,
    )
    assert result.exit_code == 0
    lines = out.splitlines()
    assert "127.0.0.1\tlocalhost buildkitsandbox" in lines and "10.1.2.3\tdb" in lines
    assert "buildkitsandbox" in lines and lines[-1] == "readonly"


def image_with_hostname(tmp_path: Path, text: str) -> str:
    """A layer holding only /etc/hostname, to stack over busybox (which has none)."""
    layer = tmp_path / "hostname-layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "hostname").write_text(text)
    return str(layer)


async def test_a_step_sees_the_images_own_etc_hostname(executor, make_rootfs, tmp_path) -> None:
    """BuildKit mounts only /etc/resolv.conf and /etc/hosts into a RUN step
    (moby/buildkit executor/oci/spec.go: generateMountOpts(resolvConf, hostsFile);
    the hostname is only oci.WithHostname, the UTS name; /etc/hostname is the image's),
    so a step reads the image's /etc/hostname while `hostname` says
    buildkitsandbox; nothing lands in the layer unless the step writes it."""
    rootfs = make_rootfs(lowers=(image_with_hostname(tmp_path, "from-the-image\n"), *make_rootfs.lowers))
    result, _, err = await sh(executor, rootfs, "cat /etc/hostname > /h; hostname > /c")
    assert result.exit_code == 0, err
    upper = Path(rootfs.upper)
    assert (upper / "h").read_text() == "from-the-image\n"
    assert (upper / "c").read_text() == "buildkitsandbox\n"
    assert sorted(walk_upper(rootfs.upper)) == ["c", "h"]


async def test_without_an_image_etc_hostname_a_step_has_none(executor, make_rootfs) -> None:
    """BuildKit creates no /etc/hostname for a RUN step (moby/buildkit
    executor/oci/spec.go mounts resolv.conf and hosts only): on an image
    without one it is absent."""
    rootfs = make_rootfs()
    result, out, err = await sh(executor, rootfs, "test -e /etc/hostname && echo present || echo absent; hostname")
    assert (result.exit_code, out) == (0, "absent\nbuildkitsandbox\n"), err
    assert walk_upper(rootfs.upper) == {}


async def test_a_step_writing_etc_hostname_keeps_it_in_the_layer(executor, make_rootfs) -> None:
    rootfs = make_rootfs()
    result, _, err = await sh(executor, rootfs, "echo mine > /etc/hostname")
    assert result.exit_code == 0, err
    assert (Path(rootfs.upper) / "etc" / "hostname").read_text() == "mine\n"


async def test_mknod_and_mkfifo_make_nodes_kept_in_the_layer(executor, make_rootfs) -> None:
    """BuildKit's runc executor lets a step create any node: runc adds
    "c *:* m" and "b *:* m" to every device cgroup (opencontainers/runc
    libcontainer/specconv/spec_linux.go, AllowedDevices), so `RUN mknod` and
    `mkfifo` work and the nodes are kept in the layer."""
    rootfs = make_rootfs()
    script = "mknod /root/null c 1 3 && mknod /root/sda b 8 0 && mkfifo /p && echo x > /root/null && echo ok"
    result, out, err = await sh(executor, rootfs, script)
    assert (result.exit_code, out) == (0, "ok\n"), err
    entries = walk_upper(rootfs.upper)
    null, sda, fifo = entries["root/null"], entries["root/sda"], entries["p"]
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(sda.st_mode) and (os.major(sda.st_rdev), os.minor(sda.st_rdev)) == (8, 0)
    assert stat.S_ISFIFO(fifo.st_mode)


@pytest.mark.parametrize("node", ["b 8 0", "c 1 1"])
async def test_a_made_node_outside_the_default_set_cannot_be_opened(executor, make_rootfs, node: str) -> None:
    """Creating is allowed, reading or writing stays limited to the default
    devices (null, zero, full, random, urandom, tty, ptmx, pts: runc's
    AllowedDevices in libcontainer/specconv/spec_linux.go, after containerd's
    default "deny all" in oci/spec_opts.go); anything else is EPERM."""
    result, _, err = await sh(executor, make_rootfs(), f"mknod /root/n {node} && head -c1 /root/n")
    assert result.exit_code != 0
    assert "Operation not permitted" in err


async def test_a_node_made_in_dev_is_not_kept(executor, make_rootfs) -> None:
    """/dev of a BuildKit step is a tmpfs (containerd oci/mounts.go defaultMounts,
    which executor/oci/spec.go's oci.GenerateSpec starts from): a node made
    there works during the step and is not in the layer."""
    rootfs = make_rootfs()
    result, out, err = await sh(executor, rootfs, "mknod /dev/x c 1 3 && echo y > /dev/x && echo ok")
    assert (result.exit_code, out) == (0, "ok\n"), err
    assert walk_upper(rootfs.upper) == {}


async def test_workdir_is_created_and_stays_in_the_layer(executor, make_rootfs) -> None:
    rootfs = make_rootfs()
    result, out, _ = await sh(executor, rootfs, "pwd", cwd="/srv/app")
    assert (result.exit_code, out) == (0, "/srv/app\n")
    assert stat.S_ISDIR(os.lstat(os.path.join(rootfs.upper, "srv", "app")).st_mode)


async def test_readonly_rootfs(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(readonly=True), "touch /x || echo refused")
    assert (result.exit_code, out) == (0, "refused\n")


async def test_scratch_rootfs_has_no_shell(executor, make_rootfs) -> None:
    out: list[bytes] = []
    result = await executor.run(make_rootfs(lowers=()), ProcessSpec(("/bin/sh", "-c", "true")), on_output=lambda s, c: out.append(c))
    assert result.exit_code == 127
    assert b'exec "/bin/sh": executable file not found' in b"".join(out)


async def test_exec_form_command_not_found(executor, make_rootfs) -> None:
    out: list[bytes] = []
    result = await executor.run(make_rootfs(), ProcessSpec(("no-such-tool", "x"), env=(PATH,)), on_output=lambda s, c: out.append(c))
    assert result.exit_code == 127
    assert b'exec "no-such-tool": executable file not found in $PATH' in b"".join(out)


# -- isolation -------------------------------------------------------------------


async def test_ps_sees_only_the_step(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(), "sleep 30 & ps -o pid,comm; true")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert result.exit_code == 0
    # The shell (pid 1), its background job (sh until it has exec'd sleep) and ps: nothing else.
    assert len(rows) == 3 and ["1", "sh"] in rows and "ps" in [comm for _, comm in rows]
    assert all(int(pid) < 100 for pid, _ in rows)


async def test_hostname_changes_stay_inside(executor, make_rootfs) -> None:
    before = socket.gethostname()
    # Without CAP_SYS_ADMIN (as in Docker) sethostname is refused; either way the host keeps its name.
    result, out, _ = await sh(executor, make_rootfs(), "hostname; hostname x; hostname")
    assert out == "buildkitsandbox\nbuildkitsandbox\n"
    assert socket.gethostname() == before


@pytest.mark.parametrize(
    "script",
    [
        "mkdir -p /mnt/p && mount -t proc proc /mnt/p",
        "mknod /tmp/mem c 1 1 && head -c1 /tmp/mem",
        "echo b > /proc/sysrq-trigger",
        "echo 1 > /proc/sys/kernel/sysrq",
        "touch /sys/kernel/x",
        "umount /etc/hosts",
        "rm /etc/hosts",
    ],
)
async def test_privileged_operations_fail(executor, make_rootfs, script: str) -> None:
    result, _, _ = await sh(executor, make_rootfs(), script)
    assert result.exit_code != 0


async def test_kcore_and_other_masked_paths_read_nothing(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(), "head -c 64 /proc/kcore | wc -c; ls /proc/acpi 2>/dev/null | wc -l; ls /sys/firmware | wc -l")
    assert result.exit_code == 0
    assert [int(n) for n in out.split()] == [0, 0, 0]


async def test_capabilities_are_dockers(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(), "grep ^Cap /proc/self/status")
    caps = {line.split(":")[0]: int(line.split()[1], 16) for line in out.splitlines()}
    assert caps == {"CapInh": 0, "CapPrm": DOCKER_DEFAULT_MASK, "CapEff": DOCKER_DEFAULT_MASK, "CapBnd": DOCKER_DEFAULT_MASK, "CapAmb": 0}


async def test_numeric_user(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(), "id; grep ^Cap[EP] /proc/self/status", user="1000:1000")
    assert result.exit_code == 0
    lines = out.splitlines()
    assert lines[0].startswith("uid=1000(app) gid=1000(app)")
    assert all(int(line.split()[1], 16) == 0 for line in lines[1:]) and len(lines) == 3


async def test_named_user_gets_home_and_supplementary_groups(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(), 'id -u; id -g; id -G; echo "$HOME"', user="app")
    assert out.split("\n")[:4] == ["1000", "1000", "1000 2000", "/home/app"]


async def test_unknown_user_is_a_sandbox_error(executor, make_rootfs) -> None:
    rootfs = make_rootfs()
    with pytest.raises(SandboxError) as info:
        await sh(executor, rootfs, "true", user="ghost")
    assert str(info.value) == "unable to find user ghost: no matching entries in passwd file"
    assert walk_upper(rootfs.upper) == {}  # the mount stubs were removed anyway


async def test_only_stdio_descriptors_are_open(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(), "ls /proc/$$/fd; echo --; ls /proc/self/fd")
    shell, ls = out.split("--\n")
    assert shell.split() == ["0", "1", "2"]
    assert ls.split() == ["0", "1", "2", "3"]  # 3 is the directory ls is reading
    result, out, _ = await sh(executor, make_rootfs(), "read line; echo \"[$line]\"")
    assert out == "[]\n"  # stdin is /dev/null


async def test_minimal_dev(executor, make_rootfs) -> None:
    result, out, _ = await sh(executor, make_rootfs(), "ls /dev")
    assert sorted(out.split()) == sorted(
        ["fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"]
    )
    result, out, err = await sh(
        executor, make_rootfs(), "echo x > /dev/null; head -c 5 /dev/urandom | wc -c; echo s > /dev/shm/f && cat /dev/shm/f"
    )
    assert (result.exit_code, out.split()) == (0, ["5", "s"]), err


# -- processes ------------------------------------------------------------------------


async def test_background_daemon_does_not_hang_or_survive(executor, make_rootfs) -> None:
    result, _, _ = await sh(executor, make_rootfs(), "(sleep 987651 &) ; (setsid sleep 987652 </dev/null >/dev/null 2>&1 &); echo started")
    assert result.exit_code == 0
    assert processes_matching(r"sleep 98765[12]") == []


async def test_fork_bomb_hits_the_pids_limit(executor, make_rootfs) -> None:
    script = "n=0; while [ $n -lt 500 ]; do sleep 1000 & n=$((n+1)); echo $n; done"
    result, out, err = await sh(executor, make_rootfs(), script, pids_limit=64)
    started = int(out.split()[-1])
    assert 50 <= started < 64, err  # the monitor and the shell count too
    assert result.exit_code != 0 and "fork" in err
    assert processes_matching(r"^sleep 1000 $") == []
    # The host is fine: it can still start processes.
    assert (await trio.run_process(["true"])).returncode == 0


async def test_default_pids_limit_is_applied(executor, make_rootfs) -> None:
    seen: list[str] = []

    async def watch() -> None:
        parent = "/sys/fs/cgroup/pids/pybuild"
        while not seen:
            for name in os.listdir(parent) if os.path.isdir(parent) else ():
                if name.startswith(f"{os.getpid()}-"):
                    with open(os.path.join(parent, name, "pids.max")) as f:
                        seen.append(f.read().strip())
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await sh(executor, make_rootfs(), "sleep 1")
        nursery.cancel_scope.cancel()
    assert seen and seen[0] == str(DEFAULT_PIDS_LIMIT)


async def test_memory_limit_kills_the_step(executor, make_rootfs) -> None:
    result, _, _ = await sh(executor, make_rootfs(), "dd if=/dev/zero of=/dev/null bs=96M count=1", memory_limit=32 << 20)
    assert result.exit_code != 0
    result, _, _ = await sh(executor, make_rootfs(), "dd if=/dev/zero of=/dev/null bs=4M count=1", memory_limit=32 << 20)
    assert result.exit_code == 0


async def test_a_step_killed_by_the_memory_limit_says_so(executor, make_rootfs) -> None:
    result, _, _ = await sh(executor, make_rootfs(), "dd if=/dev/zero of=/dev/null bs=96M count=1", memory_limit=32 << 20)
    assert result.oom_killed and result.exit_code == 137
    failed, _, _ = await sh(executor, make_rootfs(), "exit 137", memory_limit=32 << 20)
    assert (failed.exit_code, failed.oom_killed) == (137, False)  # the same code, but not the kernel's doing


async def test_timeout_kills_everything(executor, make_rootfs) -> None:
    result, _, _ = await sh(executor, make_rootfs(), "sleep 987653 & sleep 987654", timeout=0.5)
    assert result.timed_out and result.signal == 9 and result.exit_code == 137
    assert processes_matching(r"sleep 98765[34]") == []


async def test_cancellation_cleans_up_everything(tmp_path: Path, make_rootfs, require_root) -> None:
    before = host_state()
    state = tmp_path / "state"
    state.mkdir()
    rootfs = make_rootfs()
    async with SandboxExecutor(state_dir=str(state)) as executor:
        with trio.move_on_after(1) as scope:
            await sh(executor, rootfs, "sleep 987655 & (sleep 987656 &); sleep 987657", mounts=[TmpfsMount("/scratch")])
        assert scope.cancelled_caught
        assert processes_matching(r"sleep 98765[567]") == []
        assert host_state() == before  # no mounts, no cgroups left
        [private] = list(state.iterdir())
        assert sorted(p.name for p in private.iterdir()) == ["flat", "mnt", "zygote.log"]
        assert not any((private / "mnt").iterdir()) and not any((private / "flat").iterdir())
        # The executor still works.
        result, out, _ = await sh(executor, make_rootfs(), "echo alive")
        assert out == "alive\n"
    assert list(state.iterdir()) == []
    assert walk_upper(rootfs.upper) == {}


async def test_concurrent_steps(executor, make_rootfs) -> None:
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        _, out, _ = await sh(executor, make_rootfs(), f"echo {i} > /n; cat /n; hostname", hostname=f"h{i}")
        results[i] = out

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(one, i)
    assert results == {i: f"{i}\nh{i}\n" for i in range(6)}


async def test_output_is_streamed_before_the_step_ends(executor, make_rootfs) -> None:
    first_chunk_while_running = trio.Event()
    done = False

    def on_output(stream: str, chunk: bytes) -> None:
        if b"early" in chunk and not done:
            first_chunk_while_running.set()

    async def run() -> None:
        nonlocal done
        await executor.run(make_rootfs(), ProcessSpec(("/bin/sh", "-c", "echo early; sleep 2; echo late"), env=(PATH,), network="none"), on_output=on_output)
        done = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(10):
            await first_chunk_while_running.wait()
        assert not done


# -- mounts ---------------------------------------------------------------------------


async def test_secrets_never_reach_the_layer_or_the_log(executor, make_rootfs, tmp_path) -> None:
    secret = b"TOPSECRET-file-7f3a9"
    env_secret = "TOPSECRET-env-5c1d2"
    rootfs = make_rootfs()
    script = (
        '[ "$(cat /run/secrets/token)" = TOPSECRET-file-7f3a9 ] && echo file-ok; '
        '[ "$API_KEY" = TOPSECRET-env-5c1d2 ] && echo env-ok; '
        "stat -c '%a %u %g' /run/secrets/token; echo changed > /kept"
    )
    mount = SecretMount("/run/secrets/token", data=secret, mode=0o440, uid=1000, gid=2000)
    spec_text = repr(mount) + repr(ProcessSpec(("x",), secret_env=(f"API_KEY={env_secret}",)))
    result, out, err = await sh(executor, rootfs, script, mounts=[mount], secret_env=(f"API_KEY={env_secret}",))
    assert out.splitlines() == ["file-ok", "env-ok", "440 1000 2000"], err
    assert secret.decode() not in spec_text and env_secret not in spec_text
    # Nothing of the secret in the layer: not as content, not as a mount point.
    assert sorted(walk_upper(rootfs.upper)) == ["kept"]
    for directory, _, files in os.walk(rootfs.upper):
        for name in files:
            data = Path(directory, name).read_bytes()
            assert secret not in data and env_secret.encode() not in data
    # Nor in the executor's state on disk.
    for directory, _, files in os.walk(tmp_path):
        for name in files:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                assert secret not in path.read_bytes()


async def test_tmpfs_mount(executor, make_rootfs) -> None:
    rootfs = make_rootfs()
    result, out, _ = await sh(
        executor,
        rootfs,
        "echo x > /scratch/f && cat /scratch/f; dd if=/dev/zero of=/scratch/big bs=1M count=2 2>/dev/null || echo full; stat -c %a /scratch",
        mounts=[TmpfsMount("/scratch", size=1 << 20)],
    )
    assert out.splitlines() == ["x", "full", "1777"]
    assert walk_upper(rootfs.upper) == {}


async def test_bind_mounts_read_only_and_read_write(executor, make_rootfs, tmp_path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in.txt").write_text("from host\n")
    (tmp_path / "single").write_text("one file\n")
    rootfs = make_rootfs()
    result, out, _ = await sh(
        executor,
        rootfs,
        "cat /ctx/in.txt; touch /ctx/x 2>/dev/null || echo ro; echo w > /out/w; cat /etc/single.txt",
        mounts=[BindMount(str(ro), "/ctx"), BindMount(str(rw), "/out", readonly=False), BindMount(str(tmp_path / "single"), "/etc/single.txt")],
    )
    assert out.splitlines() == ["from host", "ro", "one file"]
    assert (rw / "w").read_text() == "w\n"
    assert walk_upper(rootfs.upper) == {}


async def test_overlay_mounts_read_only_and_scratch_writable(executor, make_rootfs, tmp_path, busybox_rootfs) -> None:
    stage = tmp_path / "stage"
    (stage / "app").mkdir(parents=True)
    (stage / "app" / "built").write_text("artifact\n")
    scratch_upper, scratch_work = tmp_path / "su", tmp_path / "sw"
    scratch_upper.mkdir()
    scratch_work.mkdir()
    rootfs = make_rootfs()
    result, out, _ = await sh(
        executor,
        rootfs,
        "cat /from/app/built; touch /from/x 2>/dev/null || echo ro; echo more > /rw/app/built; cat /rw/app/built; ls /rw/bin/busybox",
        mounts=[
            OverlayMount((str(stage),), "/from"),
            OverlayMount((str(stage), str(busybox_rootfs)), "/rw", upper=str(scratch_upper), work=str(scratch_work)),
        ],
    )
    assert out.splitlines() == ["artifact", "ro", "more", "/rw/bin/busybox"]
    assert (stage / "app" / "built").read_text() == "artifact\n"  # the lower is untouched
    assert (scratch_upper / "app" / "built").read_text() == "more\n"  # writes went to the scratch upper
    assert walk_upper(rootfs.upper) == {}


async def test_mount_target_through_an_image_symlink_stays_inside(executor, make_rootfs, tmp_path) -> None:
    base = tmp_path / "evil"
    (base / "etc").mkdir(parents=True)
    (base / "cache").symlink_to("/../../../../tmp/pybuild-escape-check")
    rootfs = make_rootfs(lowers=(str(base), make_rootfs.lowers[0]))
    result, _, err = await sh(executor, rootfs, "echo in > /cache/f", mounts=[TmpfsMount("/cache")])
    assert result.exit_code == 0, err
    assert not os.path.exists("/tmp/pybuild-escape-check")


async def test_mount_subpaths_resolve_inside_their_root(executor, make_rootfs, tmp_path) -> None:
    # RUN --mount=type=bind,from=stage,source=/link: the stage's own links, never the host's.
    host = tmp_path / "host"
    host.mkdir()
    (host / "canary").write_text("host file\n")
    stage = tmp_path / "stage"
    (stage / "usr" / "lib" / "tool").mkdir(parents=True)
    (stage / "usr" / "lib" / "tool" / "f").write_text("in the stage\n")
    (stage / "tool").symlink_to("/usr/lib/tool")
    (stage / "root").symlink_to("/")
    (stage / "up").symlink_to("../" * 12)
    upper, work = tmp_path / "su", tmp_path / "sw"
    upper.mkdir()
    work.mkdir()
    script = (
        "cat /tool/f /file; for m in /root /up /bind-root /rw; do cat $m{host}/canary 2>/dev/null; echo x > $m{host}/marker 2>/dev/null; done; true"
    ).format(host=host)
    rootfs = make_rootfs()
    result, out, err = await sh(
        executor,
        rootfs,
        script,
        mounts=[
            OverlayMount((str(stage),), "/tool", subpath="/tool"),
            OverlayMount((str(stage),), "/file", subpath="/up/tool/../tool/f"),
            OverlayMount((str(stage),), "/root", subpath="/root"),
            OverlayMount((str(stage),), "/up", subpath="/up"),
            BindMount(str(stage), "/bind-root", subpath="/root/up"),
            OverlayMount((str(stage),), "/rw", upper=str(upper), work=str(work), subpath="/up/root"),
        ],
    )
    assert result.exit_code == 0, err
    assert out == "in the stage\nin the stage\n"
    assert sorted(p.name for p in host.iterdir()) == ["canary"]
    with pytest.raises(SandboxError, match="mount source /up/nothing not found"):
        await sh(executor, make_rootfs(), "true", mounts=[BindMount(str(stage), "/x", subpath="/up/nothing")])


async def test_missing_bind_source_is_a_sandbox_error(executor, make_rootfs, tmp_path) -> None:
    with pytest.raises(SandboxError, match="does not exist"):
        await sh(executor, make_rootfs(), "true", mounts=[BindMount(str(tmp_path / "nope"), "/x")])


async def test_cache_mount_keeps_files_between_builds_and_out_of_the_layer(executor, make_rootfs, tmp_path) -> None:
    # RUN --mount=type=cache: the caller keeps the directory in the pybuild root and binds it read-write.
    cache = tmp_path / "cache-id"
    cache.mkdir()
    mount = [BindMount(str(cache), "/root/.cache/pip", readonly=False)]
    first, second = make_rootfs(), make_rootfs()
    result, out, _ = await sh(executor, first, "ls /root/.cache/pip; echo wheel > /root/.cache/pip/pkg.whl", mounts=mount)
    assert (result.exit_code, out) == (0, "")
    result, out, _ = await sh(executor, second, "cat /root/.cache/pip/pkg.whl", mounts=mount)
    assert out == "wheel\n"
    assert walk_upper(first.upper) == {} and walk_upper(second.upper) == {}


async def test_ssh_agent_socket_is_forwarded(executor, make_rootfs, tmp_path) -> None:
    # RUN --mount=type=ssh: the caller's agent socket bound into the step. busybox
    # cannot speak to a unix socket, so the host's python (its /usr bound in) does.
    links = tmp_path / "links"
    links.mkdir()
    (links / "lib").symlink_to("usr/lib")
    (links / "lib64").symlink_to("usr/lib64")
    agent_path = str(tmp_path / "agent.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(agent_path)
    listener.listen(1)

    async def agent() -> None:
        connection, _ = await listener.accept()
        with connection:
            await connection.send(b"agent-ok")

    client = "import os,socket; s=socket.socket(socket.AF_UNIX); s.connect(os.environ['SSH_AUTH_SOCK']); print(s.recv(64).decode())"
    rootfs = make_rootfs(lowers=(str(links), make_rootfs.lowers[0]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent)
        result, out, err = await sh(
            executor,
            rootfs,
            f'[ -S "$SSH_AUTH_SOCK" ] && /usr/bin/python3 -c "{client}"',
            mounts=[BindMount("/usr", "/usr"), BindMount(agent_path, "/run/buildkit/ssh_agent.0")],
            env=(PATH, "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"),
        )
    listener.close()
    assert out == "agent-ok\n", err
    assert walk_upper(rootfs.upper) == {}


async def test_a_dead_zygote_is_replaced(executor, make_rootfs) -> None:
    await sh(executor, make_rootfs(), "true")
    zygote = executor._zygote
    assert zygote is not None
    zygote.process.kill()
    await zygote.process.wait()
    result, out, _ = await sh(executor, make_rootfs(), "echo again")
    assert out == "again\n" and executor._zygote is not zygote


async def test_signals_are_not_ignored_or_blocked(executor, make_rootfs) -> None:
    # The zygote is a Python process (which ignores SIGPIPE); the command must not inherit that.
    result, out, _ = await sh(executor, make_rootfs(), "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -n 1")
    assert out.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000", "y"]
