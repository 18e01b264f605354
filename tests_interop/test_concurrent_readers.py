"""Readers while msal-extensions rewrites the file in place: never an empty cache for msal-persist.

msal-extensions' users see an empty cache while another process writes (it truncates the file
and then writes it) and may write that emptiness back. A msal-persist reader must never see
fewer accounts than the file held, and so never writes fewer back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import FileSampler, Measure, peer_command, read_document, reports, run_peers

from msal_persist import PersistedTokenCache
from msal_persist.testing import LocalAuthority

EXT_FLAVOURS = ["ext-filelock", "ext-portalocker"]
EXT_WRITERS = 2
IDLE_USERS = 2
DURATION = 2.5
PERSIST_REFRESH_EVERY = 250  # the msal-persist reader also writes, now and then


@pytest.mark.parametrize("ext_kind", EXT_FLAVOURS)
def test_msal_persist_reader_never_sees_fewer_accounts(
    ext_kind: str, cache_path: Path, measure: Measure
) -> None:
    """A msal-persist reader sees every account throughout msal-extensions' in-place writes."""
    writers = [f"writer-{i}@example.test" for i in range(EXT_WRITERS)]
    persist_reader, ext_reader = "persist-reader@example.test", "ext-reader@example.test"
    idle = [f"idle-{i}@example.test" for i in range(IDLE_USERS)]
    users = [*writers, persist_reader, ext_reader, *idle]
    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(cache_path))
    for user in users:
        authority.sign_in(app, username=user)
    expected = len(users)
    assert len(read_document(cache_path)["Account"]) == expected

    barrier = cache_path.with_name("barrier")
    common = {"cache": str(cache_path), "barrier": str(barrier), "parties": EXT_WRITERS + 2}
    commands = [
        peer_command(
            "refresh", kind=ext_kind, user=user, duration=DURATION, sign_in=False, **common
        )
        for user in writers
    ]
    commands.append(
        peer_command(
            "read_loop",
            kind="persist",
            user=persist_reader,
            duration=DURATION,
            refresh_every=PERSIST_REFRESH_EVERY,
            **common,
        )
    )
    # The same loop in msal-extensions, reading only: what its users see, for comparison.
    commands.append(
        peer_command(
            "read_loop",
            kind=ext_kind,
            user=ext_reader,
            duration=DURATION,
            refresh_every=0,
            **common,
        )
    )
    with FileSampler(cache_path) as sampler:
        outcomes = run_peers(commands)
    *ext_writers, persist, ext = reports(outcomes)

    def fewer(report: dict[str, object]) -> int:
        counts = report["account_counts"]
        assert isinstance(counts, dict)
        return sum(v for k, v in counts.items() if int(k) < expected)

    measure("accounts in the file before", expected)
    measure("torn reads of msal-extensions' in-place writes", sampler.counts.torn_in_place)
    measure("fewest accounts in any whole file read by the parent", sampler.counts.min_accounts)
    measure("msal-extensions writer refreshes", sum(r["calls"] for r in ext_writers))
    measure(
        "msal-persist reader: iterations, writes, fewest accounts seen, reads short of accounts",
        f"{persist['iterations']}, {persist['writes']}, {persist['min_accounts']}, "
        f"{fewer(persist)}",
    )
    measure("msal-persist reader: silent calls without a token", persist["silent_failures"])
    measure(
        f"{ext_kind} reader: iterations, fewest accounts seen, reads short of accounts",
        f"{ext['iterations']}, {ext['min_accounts']}, {fewer(ext)}",
    )
    measure(f"{ext_kind} reader: silent calls without a token", ext["silent_failures"])

    assert persist["min_accounts"] == expected, persist["account_counts"]
    assert persist["silent_failures"] == 0
    assert persist["writes"] > 0
    assert persist["lock_errors"] == []
    assert sampler.counts.torn_other == 0, sampler.counts.torn_examples
    assert sampler.counts.min_accounts == expected  # nobody wrote fewer accounts back
    assert len(read_document(cache_path)["Account"]) == expected
    assert list(cache_path.parent.glob("*.corrupt-*")) == []
