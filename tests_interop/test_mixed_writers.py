"""msal-persist and msal-extensions processes writing one cache file at the same time."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import (
    FileSampler,
    Measure,
    account_ids,
    read_document,
    refresh_tokens,
    refresher_commands,
    reports,
    run_peers,
)

PERSIST_WRITERS = 4
EXT_WRITERS = 4
REFRESHES = 10
EXT_FLAVOURS = ["ext-filelock", "ext-portalocker"]
EXT_TIMEOUT = 5.0  # msal-extensions gives up on (or stops honouring) the lock after this


@pytest.mark.parametrize("ext_kind", EXT_FLAVOURS)
def test_mixed_writers_lose_no_msal_persist_update(
    ext_kind: str, cache_path: Path, measure: Measure
) -> None:
    """msal-persist loses no write, never tears the file and never stalls its peers."""
    kinds = ["persist"] * PERSIST_WRITERS + [ext_kind] * EXT_WRITERS
    commands = refresher_commands(cache_path, kinds, refreshes=REFRESHES)
    with FileSampler(cache_path) as sampler:
        outcomes = run_peers(commands)
    results = reports(outcomes)
    final = read_document(cache_path)  # the file parses at the end
    in_file_rts = refresh_tokens(final)
    in_file_accounts = account_ids(final)
    persist = [r for r in results if r["kind"] == "persist"]
    ext = [r for r in results if r["kind"] == ext_kind]

    counts = sampler.counts
    measure("file reads by the parent", counts.reads)
    measure("torn reads of msal-extensions' in-place writes", counts.torn_in_place)
    measure("torn reads of anything else (msal-persist)", counts.torn_other)
    behind = counts.mtime_behind()
    versions = {fmt: sum(v[0] == fmt for v in counts.versions) for fmt in behind}
    for fmt, label in (("compact", "msal-persist"), ("indented", ext_kind)):
        measure(
            f"{label} versions with an mtime older than a read of the version before",
            f"{behind[fmt]}/{versions[fmt]}",
        )
    for label, group in (("msal-persist", persist), (ext_kind, ext)):
        lost_rts = sum(r["last_rt"] not in in_file_rts for r in group)
        lost_accounts = sum(r["home_account_id"] not in in_file_accounts for r in group)
        rollbacks = sum(counts.rollbacks(r["rts"], r["home_account_id"]) for r in group)
        measure(f"{label}: last refresh tokens missing from the file", f"{lost_rts}/{len(group)}")
        measure(f"{label}: accounts missing from the file", f"{lost_accounts}/{len(group)}")
        measure(f"{label}: refresh tokens rolled back while running", rollbacks)
        measure(f"{label}: longest call, s", max(r["max_stall"] for r in group))
        measure(
            f"{label}: silent calls that found no token", sum(r["silent_failures"] for r in group)
        )
        measure(f"{label}: lock errors", sum(len(r["lock_errors"]) for r in group))
        measure(f"{label}: lock fallbacks after 5 s", sum(r["lock_fallbacks"] for r in group))

    assert {r["lock_module"] for r in ext} == {
        "msal_extensions.filelock" if ext_kind == "ext-filelock" else "msal_extensions.cache_lock"
    }
    assert all(r["calls"] == REFRESHES for r in results)
    assert [r["user"] for r in persist if r["last_rt"] not in in_file_rts] == [], (
        "msal-persist updates were lost"
    )
    assert counts.torn_other == 0, counts.torn_examples
    assert [r["lock_errors"] for r in results if r["lock_errors"]] == []
    assert [r["pid"] for r in ext if r["lock_fallbacks"]] == [], "a peer hit its 5 s timeout"
    assert max(r["max_stall"] for r in results) < EXT_TIMEOUT
    assert all(r["silent_failures"] == 0 for r in persist)
    assert not cache_path.with_name(cache_path.name + ".lockfile").exists()
    assert list(cache_path.parent.glob("*.corrupt-*")) == []
