"""A typed consumer of the package: `mypy --strict` checks it (scripts/test.sh); never run.
The `type: ignore` lines must stay needed (strict mode reports unused ones), so the checks bite:
an unknown consistency is a type error, and a bytes client's values are not str."""

from typing import List, Optional, Tuple

import scalestore


def consumer() -> None:
    raw = scalestore.connect("127.0.0.1:7001", connect_timeout=2.0, attempt_timeout=0.5)
    text = scalestore.connect(encoding="utf-8")
    value: Optional[bytes] = raw.get("k", consistency="lease")
    decoded: Optional[str] = text.get("k", consistency="stale")
    values: List[Optional[str]] = text.get_many(["a", "b"])
    pairs: List[Tuple[str, str]] = text.scan(prefix="k")
    swapped: bool = raw.cas("k", None, "v")
    outcome: Tuple[bool, Optional[bytes]] = raw.cas("k", b"v", "w", return_current=True)
    deleted: int = raw.delete_prefix("k")
    tls = scalestore.TLS(ca=b"-----BEGIN CERTIFICATE-----\n", server_name="db.internal")
    behind_nat = scalestore.connect(
        "127.0.0.1:17001",
        tls=tls,
        address_map={"10.0.0.5:7001": "127.0.0.1:17001"},
        backoff_initial=0.01,
        backoff_max=1.0,
    )
    print(value, decoded, values, pairs, swapped, outcome, deleted, tls, behind_nat)
    raw.get("k", consistency="fresh")  # type: ignore[arg-type]
    wrong: Optional[str] = raw.get("k")  # type: ignore[assignment]
    print(wrong)
