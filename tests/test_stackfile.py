"""StackFile: layer names, groups and selections of a stack, both index conventions, and the sidecar errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio

from cryonet.stackfile import REBUILD, TABLE_COLUMNS, Selection, StackFile, StackFileError

LAYERS = ["B2", "B3", "ndsi", "elevation", "slope", "coherence", "glcm_contrast"]
GROUPS = ["s2", "s2", "indices", "terrain", "terrain", "insar", "texture"]


@pytest.fixture
def stack(tmp_path, make_stack):
    """A 7-layer stack with its layer table; band ``i`` holds the value ``i`` (0-based) plus a small ramp."""
    data = (np.arange(len(LAYERS))[:, None, None] + np.linspace(0, 0.5, 16 * 16).reshape(16, 16)).astype(np.float32)
    return make_stack(tmp_path / "stack.tif", data, LAYERS, GROUPS), data


def test_table_layers_groups_and_sidecar_paths(stack):
    sp, _ = stack
    sf = StackFile(sp)
    assert sf.path == sp and repr(sf) == f"StackFile({str(sp)!r})"
    assert sf.layers_csv == sp.parent / "stack.layers.csv" and sf.layers_csv.is_file()
    assert StackFile.sidecar_paths(sp) == (sp.parent / "stack.layers.csv", sp.parent / "stack.pca.json")
    assert StackFile.sidecar_paths(sp).pca_json == sp.parent / "stack.pca.json"
    table = sf.table
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(table["layer"]) == LAYERS == sf.layers and list(table["band"]) == list(range(1, 8))
    assert sf.groups == {
        "s2": ["B2", "B3"],
        "indices": ["ndsi"],
        "terrain": ["elevation", "slope"],
        "insar": ["coherence"],
        "texture": ["glcm_contrast"],
    }
    assert sf.pca_path is None  # no PCA sidecar
    sf.sidecar_paths(sp).pca_json.write_text("{}")
    assert sf.pca_path == sp.parent / "stack.pca.json"


@pytest.mark.parametrize("groups", [["s2"], ["terrain"], ["texture"], ["insar", "s2"], ["terrain", "indices", "s2"]])
def test_selection_by_group_agrees_with_the_table_in_both_conventions(stack, groups):
    sp, data = stack
    sf = StackFile(sp)
    table = pd.read_csv(sf.layers_csv)  # the sidecar, read independently
    rows = table[table["group"].isin(groups)]
    sel = sf.select(groups=groups)
    assert sel.names == tuple(rows["layer"])  # band order, whatever the order of `groups`
    assert sel.bands == tuple(int(b) for b in rows["band"])  # 1-based, as in the table
    assert sel.index0.dtype == np.int64 and list(sel.index0) == [b - 1 for b in rows["band"]]  # 0-based
    assert len(sel) == len(rows)
    with rasterio.open(sp) as src:
        by_band = src.read(list(sel.bands))  # rasterio: 1-based
        assert [src.descriptions[b - 1] for b in sel.bands] == list(sel.names)
    np.testing.assert_array_equal(by_band, data[sel.index0])  # numpy: 0-based, same pixels
    np.testing.assert_array_equal(np.round(by_band[:, 0, 0]), sel.index0)  # band i holds the value i
    assert list(sel.reduced_table["layer"]) == list(sel.names)
    assert list(sel.reduced_table["band"]) == list(range(1, len(sel) + 1))


def test_without_and_drop_are_the_complement(stack):
    sp, data = stack
    sf = StackFile(sp)
    rest = sf.without(["s2", "texture"])
    assert rest.names == ("ndsi", "elevation", "slope", "coherence")
    assert rest.bands == (3, 4, 5, 6) and list(rest.index0) == [2, 3, 4, 5]
    assert sf.select(drop=["s2", "texture"]).names == rest.names
    assert sf.select(groups=["terrain", "insar"], drop=["insar"]).names == ("elevation", "slope")
    assert sf.select().names == tuple(LAYERS)
    # the reduced table is what a writer of the reduced stack puts beside it: rows renumbered 1..k
    table = sf.table
    expected = table.iloc[[2, 3, 4, 5]].reset_index(drop=True)
    expected["band"] = np.arange(1, 5)
    pd.testing.assert_frame_equal(rest.reduced_table, expected)
    assert len(sf.without(["s2", "indices", "terrain", "insar", "texture"])) == 0
    # the same selection from a table held in memory
    mem = Selection.from_table(table, groups=["terrain"])
    assert mem.names == sf.select(groups=["terrain"]).names and mem.bands == (4, 5)


def test_unknown_or_no_group_is_a_clear_error(stack):
    sp, _ = stack
    sf = StackFile(sp)
    with pytest.raises(StackFileError, match=r"stack\.tif: groups: group\(s\) \['optics'\] not in this stack"):
        sf.select(groups=["s2", "optics"])
    with pytest.raises(StackFileError, match=r"drop: group\(s\) \['pca'\] not in this stack; it has \['s2'"):
        sf.without(["pca"])
    with pytest.raises(StackFileError, match="no layer group requested"):
        sf.select(groups=[])
    with pytest.raises(ValueError, match="not in this stack"):  # a StackFileError is a ValueError
        Selection.from_table(sf.table, groups=["optics"])


def test_missing_sidecar_names_the_file_and_the_command(stack):
    sp, _ = stack
    sf = StackFile(sp)
    sf.layers_csv.unlink()
    assert sf.layers == LAYERS  # the names are the band descriptions: no table needed
    for read in (lambda: sf.table, lambda: sf.groups, lambda: sf.select(groups=["s2"]), lambda: sf.without(["s2"])):
        with pytest.raises(StackFileError) as exc:
            read()
        msg = str(exc.value)
        assert str(sf.layers_csv) in msg and "not found" in msg and "`cryonet features`" in msg


def test_sidecar_with_another_layer_count_is_a_clear_error(stack, make_stack, tmp_path):
    sp, data = stack
    # the layer table of a six-layer build beside a seven-band raster
    other = make_stack(tmp_path / "six" / "stack.tif", data[:6], LAYERS[:6], GROUPS[:6])
    StackFile(other).layers_csv.replace(StackFile(sp).layers_csv)
    sf = StackFile(sp)
    with pytest.raises(StackFileError) as exc:
        sf.select(groups=["s2"])
    msg = str(exc.value)
    assert str(sf.layers_csv) in msg and "6 layers" in msg and "7 bands" in msg and "`cryonet features`" in msg
    assert sf.layers == LAYERS  # names still come from the band descriptions


def test_sidecar_of_another_build_or_format_is_a_clear_error(stack):
    sp, _ = stack
    sf = StackFile(sp)
    table = sf.table
    table.loc[0, "layer"] = "B4"
    table.to_csv(sf.layers_csv, index=False)
    with pytest.raises(StackFileError, match=r"lists layers \['B4'.*different builds.*`cryonet features`"):
        _ = sf.table
    table.loc[0, "layer"] = "B2"
    table.assign(band=table["band"][::-1].to_numpy()).to_csv(sf.layers_csv, index=False)
    with pytest.raises(StackFileError, match=r"'band' must be 1..7"):
        _ = sf.table
    table[["layer", "group"]].to_csv(sf.layers_csv, index=False)
    with pytest.raises(StackFileError, match=r"expected columns \['layer', 'group', 'units', 'source', 'band'\]"):
        _ = sf.table
    assert "`cryonet features`" in REBUILD


def test_layers_fall_back_on_the_table_without_band_descriptions(stack):
    sp, _ = stack
    with rasterio.open(sp, "r+") as dst:
        for i in range(1, len(LAYERS) + 1):
            dst.set_band_description(i, "")
    sf = StackFile(sp)
    assert sf.layers == LAYERS and sf.select(groups=["insar"]).bands == (6,)
    sf.layers_csv.unlink()
    with pytest.raises(StackFileError, match=r"one unique band description.*stack\.layers\.csv with 7 rows"):
        _ = sf.layers
