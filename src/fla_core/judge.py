"""The set judge (spec 5.3 P4-P16): one function shared by ``fla check`` and the simulator.

:func:`judge_set` takes a GO that already passed P1-P3 and the FI/FS files of its stem and runs
P4..P16 in order; the first failure ends it with one :class:`ChannelError` (the negative
ACRF). On success the verdicts of the declarations (P16, the NOTI) are computed in the same
streaming pass that validates the XML, so a 10 000-declaration file is read once and no
declaration object outlives its checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fla_core.anomalies import FILE_ZONE, Anomaly, ChannelError, rule_anomaly
from fla_core.checks.context import MandateView, NoMandates, RegistryView
from fla_core.checks.engine import DeclarationVerdict, noti_result_code
from fla_core.model import Environment
from fla_core.names import ChannelNameContext, FileName, NameRules, parse_upload, stem_of
from fla_core.scanning import ScanOutcome, application_of, scan
from fla_core.settings import ChannelProfile, Settings

if TYPE_CHECKING:
    from fla_core.plugins import FlaPlugins
    from fla_core.signing import TrustStore

# An FS is base64 of a small DER; anything this large is not a signature, and reading it
# whole would let one upload exhaust memory.
MAX_FS_BYTES = 16 * 1024 * 1024

SHA1_WARNING = "609"

class Precomputed(Protocol):
    """The set's one FI, read by someone else before :func:`judge_set` runs (the simulator's
    pre-scan reads a big FI while it is uploaded).

    ``fi_name`` names the FI part it was computed from; ``digests`` maps hashlib algorithm names
    to digests of its bytes (P9 uses the one of the FS's algorithm); ``outcome`` is what
    :func:`fla_core.scanning.scan_outcome` returned for those bytes, in the same context
    (processing date, channel, settings, registry, mandates, plugins). The caller vouches for
    that sameness: :func:`judge_set` only checks that the set is that one FI.
    """

    @property
    def fi_name(self) -> str: ...

    @property
    def digests(self) -> Mapping[str, bytes]: ...

    @property
    def outcome(self) -> ScanOutcome | ChannelError: ...


@dataclass
class SetVerdict:
    """Outcome of P4..P16 for one set.

    ``error`` set: negative ACRF with that code, nothing else applies. Otherwise a positive
    ACRF; ``has_noti`` says whether a NOTI follows (an application with plugin), carrying
    ``declarations`` (document order), ``file_warnings`` (``00000-609``) and
    ``file_reference``. ``accepted_registry`` holds the registry changes (spec 8.4) of the
    accepted declarations, to commit once the NOTI is written. ``signatures_checked`` is False
    when no trust store was given (offline check), so P9 did not run.
    """

    error: ChannelError | None = None
    declarations: list[DeclarationVerdict] = field(default_factory=list)
    file_warnings: list[Anomaly] = field(default_factory=list)
    file_reference: str | None = None
    application: str = ""
    has_noti: bool = False
    accepted_registry: dict[str, str] = field(default_factory=dict)
    signatures_checked: bool = True

    @property
    def accepted(self) -> bool:
        """True for a positive ACRF (P16 reached)."""
        return self.error is None

    @property
    def result_code(self) -> int | None:
        """NOTI ``ResultCode`` (spec 9.3), None when no NOTI is produced."""
        if self.error is not None or not self.has_noti:
            return None
        return noti_result_code(self.declarations)


# --- P4-P8: names, parts, policy, sizes ---------------------------------------------------------

def _same_stem(files: Sequence[Path], go: FileName) -> tuple[list[Path], list[Path]]:
    """FI and FS files of the GO's stem, each in ASCII order of their names."""
    fi_prefix, fs_prefix = f"FI.{go.stem}.", f"FS.{go.stem}."
    fis = sorted((p for p in files if p.name.startswith(fi_prefix)), key=lambda p: p.name)
    fss = sorted((p for p in files if p.name.startswith(fs_prefix)), key=lambda p: p.name)
    return fis, fss


def _check_parts(go: FileName, fi_names: list[FileName]) -> None:
    """P5 (142) and P6 (120)."""
    if not fi_names:
        raise ChannelError("142", f"no FI.{go.stem}.* file", subject=str(go))
    for fi in fi_names:
        if fi.total != go.total:
            raise ChannelError("120", f"{fi} announces {fi.total} parts, the GO {go.total}",
                               subject=str(go))
    indexes = sorted(fi.index for fi in fi_names if fi.index is not None)
    expected = list(range(1, (go.total or 0) + 1))
    if indexes != expected:
        missing = sorted(set(expected) - set(indexes))
        raise ChannelError("120", f"FI parts {indexes} present, missing {missing}",
                           subject=str(go))


def _check_fs_policy(go: FileName, fi_names: list[FileName], fs_names: list[FileName],
                     settings: Settings) -> None:
    """P7: the FS policy of the environment (121 / 122)."""
    policy = settings.fs_policy.get(go.env, "optional")
    fi_tails = {fi.tail for fi in fi_names}
    fs_tails = {fs.tail for fs in fs_names}
    if policy == "forbidden" and fs_names:
        raise ChannelError("121", f"signatures are forbidden in {go.env}: {fs_names[0]}",
                           subject=str(fs_names[0]))
    if policy == "required" and fs_tails != fi_tails:
        missing = sorted(t for t in fi_tails - fs_tails if t)
        extra = sorted(t for t in fs_tails - fi_tails if t)
        detail = (f"FI part(s) {', '.join(missing)} without FS" if missing
                  else f"FS part(s) {', '.join(extra)} without FI")
        raise ChannelError("122", f"signature required in {go.env}: {detail}", subject=str(go))
    if policy == "optional":
        for fs in fs_names:
            if fs.tail not in fi_tails:
                raise ChannelError("122", f"no FI part {fs.tail} for this FS", subject=str(fs))


def _check_sizes(fis: list[tuple[FileName, Path]], settings: Settings) -> None:
    """P8: every FI part non-empty (134) and not above ``max_file_size`` (184), INDEX order."""
    for name, path in fis:
        size = path.stat().st_size
        if size == 0:
            raise ChannelError("134", "0 bytes", subject=str(name))
        if size > settings.max_file_size:
            raise ChannelError("184", f"{size} bytes > {settings.max_file_size}",
                               subject=str(name))


# --- P9: signatures -------------------------------------------------------------------------------

def _read_fs(path: Path, name: FileName) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(MAX_FS_BYTES + 1)
    if len(data) > MAX_FS_BYTES:
        raise ChannelError("601", f"FS larger than {MAX_FS_BYTES} bytes", subject=str(name))
    return data


def sha1_warning() -> Anomaly:
    """The file-level NOTI warning ``00000-609`` (spec 8.3, S11)."""
    return rule_anomaly(SHA1_WARNING, FILE_ZONE, "/", None, row=0, declaration=0)


def _check_signatures(fis: dict[str | None, Path], fss: list[tuple[FileName, Path]], *,
                      channel: ChannelProfile, settings: Settings, trust: TrustStore,
                      at: datetime, digests: Mapping[str | None, Mapping[str, bytes]] | None = None
                      ) -> list[Anomaly]:
    """P9: each FS against its FI part, INDEX order; returns the file-level warnings.

    ``digests`` holds digests of FI parts already computed, by part tail.
    """
    from fla_core.signing import verify_fs  # pyHanko import is costly: only when signing

    sha1 = False
    for name, path in sorted(fss, key=lambda item: item[0].index or 0):
        known = digests.get(name.tail) if digests else None
        result = verify_fs(fis[name.tail], _read_fs(path, name), trust=trust, at=at,
                           sender_company=channel.company_id, registered=channel.certificates,
                           layout=settings.fs_layout, subject=str(name), digests=known,
                           max_certificates=settings.max_fs_certificates)
        sha1 = sha1 or SHA1_WARNING in result.warnings
    return [sha1_warning()] if sha1 else []


def judge_set(go: FileName, files: Sequence[Path], *, channel: ChannelProfile,
              settings: Settings, trust: TrustStore | None, today: date, at: datetime,
              registry: RegistryView, mandates: MandateView, plugins: FlaPlugins,
              check_mandates: bool = True, prescan: Precomputed | None = None) -> SetVerdict:
    """Run P4..P16 for a GO that passed P1-P3; ``files`` may hold other names (ignored).

    ``prescan`` (see :class:`Precomputed`) replaces reading the FI for P9's digest and for
    P10-P16 when the set is exactly its one FI part; P4-P9 still run first, in order.
    """
    verdict = SetVerdict(application=go.appl, signatures_checked=trust is not None)
    fi_paths: list[Path] = []
    try:
        fi_paths, fs_paths = _same_stem([p for p in files if p.is_file()], go)
        rules = NameRules.of(settings, today)
        # P4: FI names in ASCII order first, then FS names.
        fis = [(parse_upload(p.name, rules), p) for p in fi_paths]
        fss = [(parse_upload(p.name, rules), p) for p in fs_paths]
        fi_names = [n for n, _ in fis]
        _check_parts(go, fi_names)  # P5, P6
        _check_fs_policy(go, fi_names, [n for n, _ in fss], settings)  # P7
        fis.sort(key=lambda item: item[0].index or 0)
        _check_sizes(fis, settings)  # P8
        if prescan is not None and (len(fis) != 1 or fis[0][1].name != prescan.fi_name):
            prescan = None  # about another file: worthless here
        if trust is not None and fss:  # P9
            by_tail = {n.tail: p for n, p in fis}
            digests = {fis[0][0].tail: prescan.digests} if prescan is not None else None
            verdict.file_warnings = _check_signatures(by_tail, fss, channel=channel,
                                                      settings=settings, trust=trust, at=at,
                                                      digests=digests)
        app = application_of(plugins, go.appl)
        if app is None:  # spec 4.3: routed, positive ACRF, no NOTI
            return verdict
        if prescan is None:
            reference, declarations, updates = scan(
                app, go, [p for _, p in fis], channel=channel, settings=settings,
                today=today, registry=registry, mandates=mandates, plugins=plugins,
                check_mandates=check_mandates)
        elif isinstance(prescan.outcome, ChannelError):
            found = prescan.outcome  # a fresh exception: the result may be used only once
            raise ChannelError(found.code, found.detail, subject=found.subject)
        else:
            reference, declarations, updates = prescan.outcome
    except FileNotFoundError as exc:
        # A part removed while the set is judged: the set no longer has its announced parts.
        error = ChannelError("120", f"{Path(exc.filename or '?').name} disappeared during "
                             "processing", subject=str(go))
        return SetVerdict(error=error, application=go.appl,
                          signatures_checked=trust is not None)
    except ChannelError as exc:
        error = exc
        if exc.subject is None:  # document-level (P10-P15): the data file, or the set
            only = fi_paths[0].name if len(fi_paths) == 1 else str(go)
            error = ChannelError(exc.code, exc.detail, subject=only)
        return SetVerdict(error=error, application=go.appl,
                          signatures_checked=trust is not None)
    # P16: verdicts only count once the whole file passed P10-P15.
    verdict.file_reference = reference
    verdict.declarations = declarations
    verdict.accepted_registry = updates
    verdict.has_noti = True
    return verdict


# --- a whole folder, for `fla check` -------------------------------------------------------------

@dataclass(frozen=True)
class FolderEntry:
    """One judged set of a folder: the GO name (or the stem when no GO is there)."""

    label: str
    go: FileName | None
    verdict: SetVerdict


def _go_for(name: str, rules: NameRules, channel: ChannelProfile) -> FileName:
    """P1 for offline use: N1-N9, the directory taken as the one matching the name's letter."""
    plain = parse_upload(name, rules)
    context = ChannelNameContext.of(channel, Environment(plain.env).upload_dir)
    return parse_upload(name, rules, context)


def judge_folder(directory: Path, channel: ChannelProfile, settings: Settings, *,
                 trust: TrustStore | None, today: date, at: datetime,
                 registry: RegistryView, mandates: MandateView | None = None,
                 plugins: FlaPlugins, check_mandates: bool = True,
                 on_set: Callable[[FolderEntry], None] | None = None) -> list[FolderEntry]:
    """Judge every set in ``directory``: each GO, and each stem with FI/FS but no GO.

    A set without GO is judged as if ``GO.<stem>.<TOTAL of its first FI>`` were present.
    The sets share ``registry`` as given (each set sees the registry before the folder); the
    caller commits ``accepted_registry`` if it wants later sets to see earlier ones. Files
    that are not FI/FS/GO names are ignored (a folder may hold exports and keys).
    """
    mandates = mandates if mandates is not None else NoMandates()
    rules = NameRules.of(settings, today)
    files = sorted((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.name)
    gos = [p for p in files if p.name.startswith("GO.")]
    data = [p for p in files if p.name.startswith(("FI.", "FS."))]
    entries: list[FolderEntry] = []

    def judge(label: str, go_name: str, subject: str) -> None:
        try:
            if go_name != subject:
                # No GO: the data file's own name is checked first (N1-N8 give its code).
                first = parse_upload(subject, rules)
                go_name = f"GO.{first.stem}.{first.total}"
            go = _go_for(go_name, rules, channel)
        except ChannelError as exc:
            err = ChannelError(exc.code, exc.detail, subject=subject)
            entry = FolderEntry(label, None, SetVerdict(error=err, application="",
                                                        signatures_checked=trust is not None))
        else:
            verdict = judge_set(go, data, channel=channel, settings=settings, trust=trust,
                                today=today, at=at, registry=registry, mandates=mandates,
                                plugins=plugins, check_mandates=check_mandates)
            entry = FolderEntry(label, go, verdict)
        entries.append(entry)
        if on_set is not None:
            on_set(entry)

    covered: set[str] = set()
    for path in gos:
        stem = stem_of(path.name) or path.name
        covered.add(stem)
        judge(path.name, path.name, path.name)
    orphans: dict[str, Path] = {}
    for path in data:
        data_stem = stem_of(path.name)
        if data_stem is None:
            # Too few elements to know its set: its own name gives the code.
            judge(path.name, "", path.name)
        elif data_stem not in covered and data_stem not in orphans:
            orphans[data_stem] = path
    for stem, path in sorted(orphans.items()):
        first = next((p for p in data if p.name.startswith(f"FI.{stem}.")), path)
        judge(stem, "", first.name)
    return entries
