"""The README's examples run as written and print what their comments (and the summary's table) say."""

import pathlib

from tests.helpers import code_blocks

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def _run(block: str, capsys) -> list[str]:
    exec(compile(block, "README.md", "exec"), {})
    return capsys.readouterr().out.splitlines()


def test_readme_examples_run(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the LeNet example writes its weights file here
    blocks = [body for _, _, body in code_blocks(README, "python")]
    assert len(blocks) == 2, "README.md should hold the LeNet-5 and the v2 examples"
    lenet, v2 = (_run(block, capsys) for block in blocks)
    table = next(body for _, _, body in code_blocks(README, "text") if body.startswith("Serial: input"))
    shown = table.splitlines()
    assert lenet[0] == "(-1, 10)" and lenet[1:1 + len(shown)] == shown and float(lenet[-1]) < 1e-4
    assert shown[-1] == "total: 60,170 parameters (235.0 KiB); state: 0 values (0 B)"
    assert (tmp_path / "lenet5.safetensors").is_file()
    assert v2 == ["(32, 32)", "True", "(2, 8)", "(4, 5, 3) None"]


def test_readme_gives_exactly_the_two_newcomer_commands():
    first_block = code_blocks(README, "bash")[0][2]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "demo"], ["make", "test"]]
