"""The documentation (mkdocs.yml, docs/): every guide's code runs and prints what its page shows, every
derivation page's check of its own formulas against JAX passes, the docstring examples pass, the site
builds in strict mode with every public name in the API reference (and its docstring), and its pages open
in a headless browser with their title, navigation and formulas.

The site is built once per test run into a temporary directory (about 10 s of CPU); the tests that need it
skip, saying so, only when the `docs` extra is missing, and the browser test when playwright or Chromium is
(`make test` installs both Python extras; Chromium comes from the system's packages: `apt-get install
chromium`). A guide that needs an optional package says so in a `<!-- requires: torch -->` comment and is
skipped without it.
"""

import doctest
import fcntl
import importlib
import importlib.util
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys
import types
import zlib
from xml.etree import ElementTree

import jax
import pytest

import purenet
from tests.helpers import code_blocks

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDES = [DOCS / "index.md", *sorted((DOCS / "guides").glob("*.md"))]
DERIVATIONS = sorted(p for p in (DOCS / "derivations").glob("*.md") if p.stem != "index")
OUTPUT = 'title="Output"'  # the info string of a block that shows what the python block before it prints


def _expected(line: str) -> re.Pattern:
    """A shown output line as a pattern: `...` stands for any text (a figure that varies by machine)."""
    return re.compile(".*".join(re.escape(part) for part in line.split("...")) + r"\Z")


def run_page(path: pathlib.Path, capsys) -> int:
    """Run a page's python blocks in order in one namespace; a block followed by an Output block must
    print those lines. -> the number of python blocks run."""
    blocks = code_blocks(path.read_text())
    namespace = {"__name__": f"docs_{path.stem}"}
    ran = 0
    with jax.numpy_rank_promotion("allow"):  # JAX's default, as a reader runs the page (conftest raises)
        for (language, _, body), following in zip(blocks, [*blocks[1:], None]):
            if language != "python":
                continue
            ran += 1
            capsys.readouterr()
            exec(compile(body, f"{path.relative_to(ROOT)} (python block {ran})", "exec"), namespace)
            printed = capsys.readouterr().out.splitlines()
            if following is not None and OUTPUT in following[1]:
                shown = following[2].splitlines()
                assert len(printed) == len(shown) and all(_expected(s).match(p) for s, p in zip(shown, printed)), (
                    f"{path.name}, python block {ran} printed\n" + "\n".join(printed) + "\nbut the page shows\n"
                    + "\n".join(shown))
    return ran


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.stem)
def test_guide_runs_and_prints_what_it_shows(page, capsys, monkeypatch, tmp_path):
    for package in re.findall(r"<!-- requires: (\w+) -->", page.read_text()):
        pytest.importorskip(package, reason=f"{page.name} needs {package}, which is not installed")
    monkeypatch.chdir(tmp_path)  # a guide that writes files writes them here
    assert run_page(page, capsys) >= 1, f"{page.name} has no python block"


@pytest.mark.parametrize("page", DERIVATIONS, ids=lambda p: p.stem)
def test_derivation_checks_its_own_formulas_against_jax(page, capsys):
    """Every derivation page carries a "Check it yourself" block: the page's formulas typed out in
    jax.numpy (not purenet's pullbacks) beside `jax.vjp` or `jax.grad` of the forward, in float64. Each
    comparison prints `name True`, the Output block shows those lines, so a formula that drifts fails."""
    text = page.read_text()
    assert "## Check it yourself" in text, f"{page.name} has no 'Check it yourself' section"
    python = "\n".join(body for language, _, body in code_blocks(text) if language == "python")
    assert re.search(r"jax\.(vjp|grad)\(", python), f"{page.name}: its check compares with nothing from JAX"
    assert 'jax_enable_x64", True' in python, f"{page.name}: its check does not run in float64"
    assert not re.search(r"^\s*(import|from) purenet", python, re.M), (
        f"{page.name}: the check must type the page's formulas, not call purenet's own pullbacks")
    shown = [line for _, info, body in code_blocks(text) if OUTPUT in info for line in body.splitlines()]
    assert shown and all(line.endswith(" True") for line in shown), f"{page.name} shows {shown}"
    assert run_page(page, capsys) >= 1


def test_figures_are_hand_written_svg_that_pages_use():
    """docs/figures/*.svg: well-formed SVG with a title and a text description (read by screen readers
    and search), each shown by some page; the strict build checks that every figure a page shows exists."""
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    figures = sorted((DOCS / "figures").glob("*.svg"))
    assert len(figures) >= 5, [f.name for f in figures]
    for figure in figures:
        root = ElementTree.parse(figure).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg", figure.name
        for part in ("title", "desc"):
            found = root.find(f"{{http://www.w3.org/2000/svg}}{part}")
            assert found is not None and found.text.strip(), f"{figure.name} has no <{part}>"
        assert f"figures/{figure.name})" in pages, f"no page shows {figure.name}"


def test_docstring_examples_pass():
    """doctest over every purenet module: the `>>>` examples in docstrings run and print what they show."""
    finder, runner = doctest.DocTestFinder(exclude_empty=True), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    for info in pkgutil.walk_packages(purenet.__path__, "purenet."):
        module = importlib.import_module(info.name)
        for test in finder.find(module, module.__name__):
            if test.examples:
                runner.run(test)
                examples += len(test.examples)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed (doctest's report above)"
    assert examples >= 5, f"expected docstring examples, found {examples}"


# ------------------------------------------------------------------------------------------ the site


def _hook(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> pathlib.Path:
    """The site, built once per test run: under pytest-xdist the workers share one build (a file lock in
    the run's common temporary directory), so `make test` pays for it once."""
    for package in ("mkdocs", "mkdocstrings_handlers.python", "material", "pymdownx", "latex2mathml"):
        if importlib.util.find_spec(package.split(".")[0]) is None or importlib.util.find_spec(package) is None:
            pytest.skip(f"the docs extra is not installed ({package} missing): pip install -e '.[docs]'")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out, failure = shared / "docs-site", shared / "docs-site.failed"
    with open(shared / "docs-site.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "objects.inv").is_file() and not failure.is_file():
            build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                                   cwd=ROOT, env=os.environ | {"NO_MKDOCS_2_WARNING": "1"}, capture_output=True,
                                   text=True, check=False)
            if build.returncode != 0:
                problems = [line for line in build.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
                failure.write_text("\n".join(problems or [build.stderr[-6000:]]))
    assert not failure.is_file(), "mkdocs build --strict failed:\n" + failure.read_text()
    return out


def inventory(site: pathlib.Path) -> set[str]:
    """The object names in the site's objects.inv (Sphinx's format v2, which mkdocstrings writes)."""
    data = (site / "objects.inv").read_bytes()
    body = zlib.decompress(data.split(b"\n", 4)[4]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


def _resolve(path: str):
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise LookupError(path)


def test_site_builds_strict_with_every_page(site):
    for page in ("index.html", "reference/layers.html", "derivations/recurrent.html", "guides/custom-layer.html",
                 "code/purenet/layers/dense.py.html", "search/search_index.json", "objects.inv"):
        assert (site / page).is_file(), page
    derivations = sorted(p.stem for p in (DOCS / "derivations").glob("*.md"))
    for name in derivations:  # every derivation page is built, shows formulas (MathML) and links to the code
        html = (site / "derivations" / f"{name}.html").read_text()
        assert name == "index" or 'href="../code/purenet/' in html, f"{name}.md links to no source file"
    for name in ("dense", "recurrent", "softmax-cross-entropy"):
        html = (site / "derivations" / f"{name}.html").read_text()
        assert html.count("<math") >= 10 and 'class="arithmatex"' not in html, name


def test_every_public_name_is_in_the_reference_with_a_docstring(site):
    reference = _hook("reference")
    documented = {id(_resolve(name)) for name in inventory(site) if name.startswith("purenet.")}
    package = reference._griffe_package()
    names = 0
    for module_name, public in reference.reachable_public().items():
        module = importlib.import_module(module_name)
        for name in public:
            assert id(getattr(module, name)) in documented, f"{module_name}.{name} is not in the API reference"
            obj = reference._resolve(package, reference.canonical_path(package, module_name, name))
            assert obj.docstring and obj.docstring.value.strip(), f"{module_name}.{name} has no docstring"
            names += 1
    pages = reference.reference_entries()
    assert sum(map(len, pages.values())) >= 250 and names >= 250, (sum(map(len, pages.values())), names)


def test_the_hooks_warn_on_broken_links_formulas_and_missing_docstrings(caplog):
    """What makes the strict build fail: each hook logs a warning (`mkdocs build --strict` aborts on any)."""
    sources, math, reference = _hook("sources"), _hook("math"), _hook("reference")
    page = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="derivations/x.md"))
    good = sources.on_page_markdown("[f](../../purenet/ops.py#linear)", page, None, None)
    assert good == "[f](../code/purenet/ops.py.md#linear)" and not caplog.records
    sources.on_page_markdown("[f](../../purenet/ops.py#no_such_function) [g](../../purenet/nothing.py)", page,
                             None, None)
    assert [r.getMessage().split(", ")[-1] for r in caplog.records] == [
        "which defines no 'no_such_function'", "which does not exist"]
    caplog.clear()
    assert "<mfrac>" in math.to_mathml(r"\frac{\partial L}{\partial x}", display=False)
    with pytest.raises(ValueError, match="unconverted"):  # latex2mathml keeps the backslash of \_ in \text{}
        math.to_mathml(r"(N, \text{max\_len})", display=False)
    aligned = math.to_mathml(r"\begin{align*} a &= b \\ cd &= e \end{align*}", display=True)
    assert 'style="text-align: right"' in aligned and 'style="text-align: left"' in aligned  # MathML Core
    html = math.on_page_content('<span class="arithmatex">\\(\\nosuchcommand x\\)</span>', page, None, None)
    assert "arithmatex" in html and "does not convert" in caplog.records[0].getMessage()
    caplog.clear()
    package = reference._griffe_package()
    package["layers.dense.Dense"].docstring = None
    reference._page(package, "Layers", "", [("purenet.layers", "Dense")])
    assert "purenet.layers.Dense is public and has no docstring" in caplog.records[0].getMessage()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def test_site_opens_in_a_browser(site, tmp_path):
    """Headless Chromium (through playwright) opens the index and a reference page from the files: the
    title, the navigation and a formula laid out by the browser's MathML engine, no script error."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (docs extra)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.goto((site / "index.html").as_uri())
        assert page.title().startswith("purenet")
        nav = page.locator("nav.md-nav--primary").first
        for title in ("Guides", "Derivations", "Reference"):
            assert title in nav.inner_text()
        formula = page.locator("math").first
        box = formula.bounding_box()
        assert box is not None and box["width"] > 20 and box["height"] > 5, box
        page.screenshot(path=str(tmp_path / "index.png"))
        page.goto((site / "reference" / "layers.html").as_uri())
        assert page.title().startswith("Layers")
        assert page.locator("h3#purenet\\.layers\\.dense\\.Dense").count() == 1
        assert page.locator("nav.md-nav--primary").first.is_visible()
        page.goto((site / "derivations" / "recurrent.html").as_uri())
        assert page.locator("div.math math").count() >= 5
        widths = page.eval_on_selector_all("div.math math", "els => els.map(e => e.getBoundingClientRect().width)")
        assert min(widths) > 20, widths
        browser.close()
    assert not errors, errors
