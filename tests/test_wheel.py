"""The built wheel carries the templates: `spork init` works from a fresh virtual environment."""

from __future__ import annotations

import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from tests.support import PROJECT_ROOT, Processes


def test_wheel_installs_into_a_fresh_venv_and_init_renders_every_template(
    tmp_path: Path, processes: Processes
) -> None:
    dist = tmp_path / "dist"
    build = processes.run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--no-isolation",
        "--outdir",
        str(dist),
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("spork_gateway-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "spork_cli/templates/index.toml" in names
    assert "spork_cli/templates/minimal/gateway.toml" in names

    # The venv borrows the dependencies of the environment running the tests (not the base
    # interpreter's, which may have none of them) but must use the wheel's own code: the
    # borrowed directories come after its own site-packages.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    own = processes.run(
        str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
    ).stdout.strip()
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(own) / "borrowed-dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    install = processes.run(
        str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel), timeout=300
    )
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp_path / "work"
    work.mkdir()
    where = processes.run(
        str(python), "-c", "import spork_cli.scaffold as s; print(s.templates_dir())", cwd=work
    )
    assert where.stdout.strip().startswith(str(env_dir)), where.stdout
    # Installed under the name users install it by ("spork-cli" on PyPI is another project).
    named = processes.run(str(python), "-m", "pip", "show", "spork-gateway")
    assert named.returncode == 0 and "Location: " + str(env_dir) in named.stdout, named.stdout
    spork = env_dir / "bin" / "spork"
    for template in ("minimal", "full", "microservices"):
        target = work / template
        made = processes.run(
            str(spork), "init", str(target), "--template", template, cwd=work, timeout=60
        )
        assert made.returncode == 0, made.stdout + made.stderr
        checked = processes.run(
            str(spork), "check", str(target / "gateway.toml"), cwd=work, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
