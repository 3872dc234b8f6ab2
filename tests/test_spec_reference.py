"""The README's spec reference is the one generated from the model."""

from __future__ import annotations

from pathlib import Path

from cablab_cluster.spec import reference

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_block_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    assert reference.START in text and reference.END in text
    assert reference.replace_block(text) == text, (
        "README.md's spec reference differs from the model: run "
        "`python -m cablab_cluster.spec.reference --write README.md`")


def test_every_key_is_described():
    undescribed = [key for key, _, _, description in reference.rows() if not description]
    assert not undescribed, f"give these fields a docstring in spec/model.py: {undescribed}"


def test_rows_show_type_default_and_nesting():
    rows = {key: (kind, default) for key, kind, default, _ in reference.rows()}
    assert rows["`hub.users.cull.timeout`"] == ("int", "`3600`")
    assert rows["`hosts[].roles`"][1] == "required"
    assert rows["`docker.storage.driver`"][0] == "`overlay2` \\| `lvm` \\| `devicemapper-direct-lvm`"
    assert rows["`shares[].path`"][0] == "path"
    assert rows["`hub.images.singleuser`"][1] == "`{name: cablab/singleuser:1.0}`"
    assert "`hub.users.overrides.<user>.limits.memory`" in rows


def test_write_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{reference.START}\nold table\n{reference.END}\n\nRules after the table.\n",
                      encoding="utf-8")
    assert reference.main(["--write", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text == f"# title\n\n{reference.block()}\n\nRules after the table.\n"
    assert "old table" not in text and "| `hub.userlist` |" in text
