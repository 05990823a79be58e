"""ArchivedTree: tar's index grouped per directory, spooled once tar leaves a directory."""

import hashlib
import io
import random
from collections import defaultdict

from coord.archive import INDEX_CHUNK_SIZE, _collect_index
from coord.consistency import ArchivedTree


def depth_first_index(tree: dict[str, list[str]], directory: str = ".") -> list[str]:
    """The index lines tar --sort=name writes for `tree` (directory -> entry names; '/' marks a subdirectory)."""
    lines = ["./"] if directory == "." else []
    for name in sorted(tree.get(directory, [])):
        bare = name.rstrip("/")
        path = bare if directory == "." else f"{directory}/{bare}"
        if name.endswith("/"):
            lines.append(f"./{path}/")
            lines.extend(depth_first_index(tree, path))
        else:
            lines.append(f"./{path}")
    return lines


def expected_grouping(lines: list[str]) -> dict[str, set[str]]:
    """What the directories hold, computed the obvious way: every name in memory."""
    grouping: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        path = line[2:].rstrip("/") or "."
        if line.endswith("/"):
            grouping.setdefault(path, set())
        if path != ".":
            parent, _, name = path.rpartition("/")
            grouping[parent or "."].add(name)
    return {directory: names for directory, names in grouping.items() if f"./{directory}/" in lines or directory == "."}


def random_tree(seed: int) -> dict[str, list[str]]:
    generator = random.Random(seed)
    tree: dict[str, list[str]] = {}
    pending = ["."]
    while pending and len(tree) < 60:
        directory = pending.pop()
        entries = []
        for index in range(generator.randint(0, 12)):
            if generator.random() < 0.3 and directory.count("/") < 5:
                entries.append(f"d{index}/")
                pending.append(f"d{index}" if directory == "." else f"{directory}/d{index}")
            else:
                entries.append(f"f{index}.bin")
        tree[directory] = entries
    return tree


def grouping_of(tree: ArchivedTree) -> dict[str, set[str]]:
    found = {}
    for directory, names in tree.directories():
        assert directory not in found, f"{directory} given twice"
        found[directory] = names
    return found


def test_depth_first_index_gives_every_directory_once_with_its_names() -> None:
    for seed in range(20):
        lines = depth_first_index(random_tree(seed))
        with ArchivedTree() as tree:
            for line in lines:
                tree.add_member(line)
            assert tree.count == len(lines)
            assert grouping_of(tree) == expected_grouping(lines)
            assert grouping_of(tree) == expected_grouping(lines)  # readable again


def test_memory_follows_the_open_directories_not_the_volume() -> None:
    # 200 directories of 500 files each: 100,000 names, of which only the current directory's are held.
    layout = {".": [f"part_{index:03}/" for index in range(200)]}
    layout.update({f"part_{index:03}": [f"col{c}.bin" for c in range(500)] for index in range(200)})
    most_held = 0
    with ArchivedTree() as tree:
        for line in depth_first_index(layout):
            tree.add_member(line)
            most_held = max(most_held, tree.names_in_memory)
        assert tree.count == 1 + 200 + 200 * 500
        assert len(grouping_of(tree)) == 201
    assert most_held <= 200 + 500  # the root's names and one part's


def test_an_index_out_of_depth_first_order_is_still_grouped_correctly() -> None:
    for seed in range(20):
        lines = depth_first_index(random_tree(seed))
        shuffled = [lines[0], *random.Random(seed).sample(lines[1:], len(lines) - 1)]
        with ArchivedTree() as tree:
            for line in shuffled:
                tree.add_member(line)
            assert grouping_of(tree) == expected_grouping(lines)


def test_names_tar_escapes_come_back_as_the_file_system_spells_them() -> None:
    with ArchivedTree() as tree:
        for line in ["./", "./a b/", "./a b/new\\nline", "./a b/caf\\351", "./back\\\\slash"]:
            tree.add_member(line)
        assert grouping_of(tree) == {
            ".": {"a b", "back\\slash"},
            "a b": {"new\nline", "caf\udce9"},  # the Latin-1 byte 0xe9, as os.listdir returns it
        }


def test_an_empty_index_has_no_directories() -> None:
    with ArchivedTree() as tree:
        assert grouping_of(tree) == {}


def test_the_index_reader_gives_the_same_tree_and_digest_whatever_the_chunk_boundaries() -> None:
    """tar's index arrives in 64 KiB chunks: lines (and, were tar not under LC_ALL=C, UTF-8 sequences) straddle them."""
    names = [f"{'é' * (index % 7)}file-{index:06}" for index in range(12_000)]
    for shift in range(4):  # move every boundary by a byte, so some fall inside a two-byte 'é'
        lines = ["./", f"./a{'p' * shift}", "./d/", *[f"./d/{name}" for name in names]]
        raw = "".join(f"{line}\n" for line in lines).encode()
        assert len(raw) > 3 * INDEX_CHUNK_SIZE
        digest = hashlib.sha256()
        with ArchivedTree() as tree:
            _collect_index(io.BytesIO(raw), tree, digest)
            assert digest.hexdigest() == hashlib.sha256(raw).hexdigest()
            assert tree.count == len(lines)
            assert grouping_of(tree) == {".": {f"a{'p' * shift}", "d"}, "d": set(names)}
