import pytest

from core.errors import Unavailable
from core.reading import ReadBudget


def test_one_reader_reads_the_most_and_a_crowd_shares_the_budget():
    budget = ReadBudget(budget_bytes=32 << 20, most=1 << 20, least=64 << 10)
    with budget.reading() as chunk_size:
        assert chunk_size() == 1 << 20
        readers = [budget.reading() for _ in range(49)]
        for reader in readers:
            reader.__enter__()
        assert chunk_size() == (32 << 20) // 100  # fifty readers, two chunks each within 32 MiB
        for reader in readers:
            reader.__exit__(None, None, None)
        assert chunk_size() == 1 << 20  # the chunk grows back as readers leave


def test_the_chunk_never_falls_below_the_least():
    budget = ReadBudget(budget_bytes=1 << 20, most=1 << 20, least=64 << 10)
    readers = [budget.reading() for _ in range(1000)]
    sizes = [reader.__enter__() for reader in readers]
    assert sizes[-1]() == 64 << 10
    for reader in readers:
        reader.__exit__(None, None, None)


def test_a_reader_that_fails_still_leaves():
    budget = ReadBudget(budget_bytes=4 << 20, most=4 << 20, least=1)
    try:
        with budget.reading():
            raise OSError("disk")
    except OSError:
        pass
    with budget.reading() as chunk_size:
        assert chunk_size() == 2 << 20  # alone: the failed reader no longer counts


def test_a_files_range_comes_in_budgeted_chunks_and_the_file_is_closed(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 1024)  # 256 KiB
    budget = ReadBudget(budget_bytes=1 << 20, most=100_000, least=1)
    file = path.open("rb")
    chunks = list(budget.file_chunks(file, 1000, 200_000))
    assert b"".join(chunks) == path.read_bytes()[1000:201_000]
    assert [len(chunk) for chunk in chunks] == [100_000, 100_000]
    assert file.closed


def test_a_file_shorter_than_its_range_cuts_the_response_short_with_an_error(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 10)
    chunks = ReadBudget().file_chunks(path.open("rb"), 4, 100)
    assert next(chunks) == b"x" * 6
    with pytest.raises(Unavailable, match="shorter than expected"):
        next(chunks)
