"""``fla-sim``: create and configure a simulator home, serve it, show its journal (design 4).

Exit codes: 0 success; 2 usage, configuration or environment error, including a refused
configuration change (M4 overlap, reserved sender number) -- nothing is stored then.
Errors are one line on stderr; ``-v`` shows the traceback (``fla_core.cli_common``, as ``fla``).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from fla_core.cli_common import EXIT_USAGE, PASSWORD_ENV, Json, Program, ProgramGroup, Verbose
from fla_core.identifiers import CHANNEL_USER_GRAMMAR, normalize_kbo
from fla_sim.config import ConfigError, GiB, Renewal, SimulatorConfig, SimulatorHome

if TYPE_CHECKING:
    from cryptography import x509

    from fla_core.pki import CertifiedKey, KeyType
    from fla_sim.api import Simulator


class CliError(Exception):
    """An error of the command line itself (bad file given, ...): exit code 2."""


def _describe(exc: Exception) -> tuple[int, str] | None:
    """Configuration and command-line errors are written for the user: their text alone."""
    if isinstance(exc, ConfigError | CliError):
        return EXIT_USAGE, str(exc)
    return None


SIM = Program("fla-sim", describe=_describe)


class _Group(ProgramGroup):
    """The ``fla-sim`` group: every error is one line and an exit code."""

    program = SIM


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Local simulator of the social-security BATCH channel (SFTP).")
channel_app = typer.Typer(no_args_is_help=True,
                          help="Register, list and remove SFTP channels and their SSH keys.")
mandate_app = typer.Typer(no_args_is_help=True, help="Register and list mandates (spec 2.2).")
trust_app = typer.Typer(no_args_is_help=True, help="Trust anchors for senders' signatures.")
cert_app = typer.Typer(no_args_is_help=True,
                       help="Test signing certificates from the simulator CA (spec 6).")
key_app = typer.Typer(no_args_is_help=True, help="Add and revoke a channel's SSH keys.")
channel_app.add_typer(key_app, name="key")
app.add_typer(channel_app, name="channel")
app.add_typer(mandate_app, name="mandate")
app.add_typer(trust_app, name="trust")
app.add_typer(cert_app, name="cert")

class _Out:
    """A rich console bound to the current stdout (wide when it is not a terminal)."""

    def print(self, *objects: Any) -> None:
        width = None if sys.stdout.isatty() else 200  # scripts and logs: never crop columns
        Console(file=sys.stdout, highlight=False, width=width, soft_wrap=True).print(*objects)
        sys.stdout.flush()  # a supervising script reads the "serving ... on host:port" line


out = _Out()

# Placeholders name what a value is (KBO, USER, FILE.pub), not its Python type; flags get none.
Home = Annotated[Path, typer.Argument(metavar="HOME", help="Simulator home directory.")]
Kbo = Annotated[str, typer.Option(
    metavar="KBO", help="Enterprise number (KBO/BCE), 10 digits (dots, BE prefix allowed).")]
HostOption = Annotated[str | None, typer.Option(
    metavar="HOST", help="Listen address (default: host in simulator.toml).")]
# what spec 6.3 accepts as a signing key
SIGNING_KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384")
SIGNER_FILES = ("signer-key.pem", "signer-cert.pem", "signer.p12")


def _loaded(path: Path) -> tuple[SimulatorHome, SimulatorConfig]:
    home = SimulatorHome(path)
    # Fails early, naming the file, when the home is missing or broken; the configuration read
    # here is handed on so a command does not read it a second time.
    return home, home.load()


def _home(path: Path) -> SimulatorHome:
    return _loaded(path)[0]


@app.callback()
def _options(verbose: Verbose = False) -> None:
    """Local simulator of the social-security BATCH channel (SFTP)."""


@app.command()
def init(home: Home,
         force: Annotated[bool, typer.Option(
             metavar="", help="On an existing home: renew its host key, CA and answer signer; "
                              "channels, mandates, trust anchors and the journal are kept.")
         ] = False) -> None:
    """Create a home: SSH host key, simulator PKI, simulator.toml."""
    target = SimulatorHome(home)
    if force and target.config_path.exists():
        _print_renewal(target, target.renew_keys())
        return
    created = SimulatorHome.init(home)
    out.print(f"created simulator home {created.path}")
    out.print(f"  host key      {created.host_key_path}.pub")
    out.print(f"  test CA       {created.ca_cert_path} (trusted for senders' signatures)")
    out.print(f"  answer signer {created.answer_cert_path}")


def _print_renewal(home: SimulatorHome, renewal: Renewal) -> None:
    config = renewal.config
    out.print(f"renewed the keys of simulator home {home.path}")
    out.print(f"  host key      {home.host_key_path}.pub: new, clients must replace the old "
              f"known_hosts line with 'fla-sim hostkey {home.path}'")
    out.print(f"  test CA       {home.ca_cert_path}: new; signatures by certificates the old "
              "CA issued are refused from now on (605)")
    out.print(f"  answer signer {home.answer_cert_path}: new, issued by the new CA")
    out.print(f"kept: simulator.toml (channels {len(config.channels)}, mandates "
              f"{len(config.mandates)}, trust anchors {len(config.trust_anchors)}, CRLs "
              f"{len(config.crls)}), the channels' SSH keys and certificates, the journal")
    for user, rel in renewal.old_ca_issued:
        company = next(c.company for c in config.channels if c.user == user)
        out.print(f"  {rel} of channel {user} was issued by the old CA: issue a new one with "
                  f"'fla-sim cert issue {home.path} --company {company} --channel {user} "
                  "--out DIR'")


@channel_app.command("add")
def channel_add(
    home: Home,
    user: Annotated[str, typer.Option(metavar="USER",
                                      help=f"Technical username: {CHANNEL_USER_GRAMMAR}.")],
    quality: Annotated[str, typer.Option(metavar="QUALITY",
                                         help="employer, service-provider, "
                                              "social-secretariat or training-provider.")],
    company: Kbo,
    sender: Annotated[str, typer.Option(metavar="NNNNNN", help="Sender number, 6 digits.")],
    ssh_key: Annotated[list[Path], typer.Option(
        "--ssh-key", metavar="FILE.pub", help="OpenSSH public key file (repeatable).")],
    application: Annotated[list[str] | None, typer.Option(
        "--application", metavar="CODE",
        help="Application code enabled on the channel (repeatable; default FLAC).")] = None,
    cert: Annotated[list[Path] | None, typer.Option(
        "--cert", metavar="FILE.pem",
        help="Registered signing certificate, PEM (repeatable).")] = None,
    quota: Annotated[int, typer.Option(metavar="BYTES",
                                       help="Bytes allowed in IN* at once.")] = GiB,
) -> None:
    """Register a channel (spec 3.1)."""
    target = _home(home)
    keys = [line for path in ssh_key for line in _key_lines(path)]
    # the same spellings `fla --company` accepts (fla_core.identifiers), stored as 10 digits
    added = target.add_channel(user, quality, normalize_kbo(company), sender, keys,
                               certificates=cert or [], applications=application or ["FLAC"],
                               quota_bytes=quota)
    out.print(f"channel {added.user} added: {added.quality.alias}, company {added.company}, "
              f"sender {added.sender}, applications {', '.join(sorted(added.applications))}")


def _key_lines(path: Path) -> list[str]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read the SSH public key ({exc})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise CliError(f"{path}: no public key in the file; give the .pub file of the key pair")
    return lines


User = Annotated[str, typer.Option(metavar="USER", help="Technical username of the channel.")]
_LIVE = "a running 'fla-sim serve' applies it at the next login"


@channel_app.command("remove")
def channel_remove(home: Home, user: User) -> None:
    """Remove a channel: it can no longer log in; its files and journal are kept."""
    target = _home(home)
    removed = target.remove_channel(user)
    out.print(f"channel {removed.user} removed ({_LIVE}, and closes its sessions); kept: "
              f"{target.path / 'channels' / removed.user}, its keys/ and certs/ files and "
              "its journal records")


@key_app.command("add")
def channel_key_add(
    home: Home, user: User,
    ssh_key: Annotated[list[Path], typer.Option(
        "--ssh-key", metavar="FILE.pub", help="OpenSSH public key file (repeatable).")],
) -> None:
    """Register another SSH public key for a channel."""
    target = _home(home)
    added = target.add_key(user, [line for path in ssh_key for line in _key_lines(path)])
    out.print(f"channel {user}: {len(added)} SSH key(s) added ({_LIVE})")


@key_app.command("revoke")
def channel_key_revoke(
    home: Home, user: User,
    key: Annotated[list[str], typer.Option(
        "--key", metavar="FILE.pub|FINGERPRINT",
        help="The key to revoke: its .pub file or its fingerprint (SHA256:..., as "
             "'ssh-keygen -lf FILE.pub' prints it) (repeatable).")],
) -> None:
    """Revoke SSH keys of a channel: they can no longer log in."""
    target = _home(home)
    wanted = [line for k in key for line in (
        _key_lines(Path(k)) if not k.upper().startswith(("SHA256:", "MD5:")) else [k])]
    gone = target.revoke_key(user, wanted)
    out.print(f"channel {user}: revoked {', '.join(gone)} ({_LIVE})")


@channel_app.command("list")
def channel_list(home: Home, as_json: Json = False) -> None:
    """List the channels of a home."""
    _, config = _loaded(home)
    rows: list[dict[str, Any]] = [
        {"user": c.user, "quality": c.quality.value, "company": c.company, "sender": c.sender,
         "applications": sorted(c.applications), "ssh_keys": len(c.ssh_keys),
         "certificates": c.certificates, "quota_bytes": c.quota_bytes} for c in config.channels]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("user", "quality", "company", "sender", "applications", "keys", "certs")
    for r in rows:
        table.add_row(r["user"], r["quality"], r["company"], r["sender"],
                      " ".join(r["applications"]), str(r["ssh_keys"]), str(len(r["certificates"])))
    out.print(table)


@mandate_app.command("add")
def mandate_add(
    home: Home,
    employer: Annotated[str, typer.Option(metavar="KBO",
                                          help="Employer enterprise number (mandator).")],
    representative: Annotated[str, typer.Option(metavar="KBO",
                                                help="Representative enterprise number.")],
    level: Annotated[int, typer.Option(metavar="1|2",
                                       help="1 (employer -> representative) or 2 "
                                            "(representative -> sender number).")],
    application: Annotated[str, typer.Option(metavar="CODE", help="Application code.")] = "FLAC",
    start: Annotated[str | None, typer.Option(metavar="YYYYQ",
                                              help="Level 1: start quarter.")] = None,
    end: Annotated[str | None, typer.Option(metavar="YYYYQ",
                                            help="Level 1: end quarter.")] = None,
    sender: Annotated[str | None, typer.Option(metavar="NNNNNN",
                                               help="Level 2: sender number.")] = None,
) -> None:
    """Register a mandate; a second overlapping level-1 mandate is refused (M4)."""
    from fla_core.mandates import MandateError, MandateRecord

    target = _home(home)
    try:
        record = MandateRecord(level=level,  # type: ignore[arg-type]
                               employer=normalize_kbo(employer),
                               representative=normalize_kbo(representative),
                               application=application.upper(),
                               start=start, end=end, sender=sender)
    except MandateError as exc:
        raise CliError(f"mandate refused: {exc}") from None
    target.add_mandate(record)
    out.print(f"mandate added: {record.describe()}")


@mandate_app.command("list")
def mandate_list(home: Home, as_json: Json = False) -> None:
    """List the mandates of a home."""
    records = _loaded(home)[1].mandates
    if as_json:
        print(json.dumps([r.to_mapping() for r in records], indent=2))
        return
    for record in records:
        out.print(record.describe())


@trust_app.command("add")
def trust_add(home: Home,
              pem: Annotated[Path, typer.Argument(metavar="CA.pem",
                                                  help="CA certificate (or CRL), PEM.")]) -> None:
    """Trust a CA for senders' signatures (a CRL PEM is added to the CRLs)."""
    rel = _home(home).add_trust(pem)
    out.print(f"added {rel}")


@app.command()
def serve(home: Home, host: HostOption = None,
          port: Annotated[int | None, typer.Option(
              metavar="PORT", help="Listen port, 0 = any free one (default: port in "
                                   "simulator.toml).")] = None,
          quiet: Annotated[bool, typer.Option(
              "--quiet", "-q", metavar="",
              help="Log warnings and errors only, not each file, verdict and answer.")] = False,
          verbose: Annotated[bool, typer.Option(
              "--verbose", "-v", metavar="",
              help="Also log debug lines and asyncssh's connection log.")] = False,
          ) -> None:
    """Run the simulator until interrupted (Ctrl-C); one log line per file, verdict, answer."""
    from fla_sim.api import Simulator

    target, config = _loaded(home)
    listen_host = config.host if host is None else host
    listen_port = config.port if port is None else port
    handler = _log_to_stderr(quiet=quiet, verbose=verbose)
    try:
        Simulator(target.path, host=listen_host, port=listen_port).serve_forever(
            on_started=lambda sim: _announce(sim, config))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise CliError(f"{listen_host}:{listen_port} is in use by another program; stop it, or "
                       "give --port PORT (0: any free port)") from None
    finally:
        logging.getLogger().removeHandler(handler)
    out.print("fla-sim stopped")


def _log_to_stderr(*, quiet: bool, verbose: bool) -> logging.Handler:
    """Send log lines to stderr: the simulator's at INFO (or as asked), libraries' warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.getLogger("fla_sim").setLevel(level)
    if verbose:  # key exchange and authentication, for a client that cannot connect
        logging.getLogger("asyncssh").setLevel(logging.INFO)
    return handler


def _announce(sim: Simulator, config: SimulatorConfig) -> None:
    """The "serving" line (scripts read the port there), then the known_hosts line."""
    assert sim.port is not None
    out.print(f"fla-sim serving {sim.home.path} on {sim.host}:{sim.port}; Ctrl-C stops")
    again = f"fla-sim hostkey {sim.home.path}"
    if sim.host != config.host:
        again += f" --host {sim.host}"
    if sim.port != config.port:
        again += f" --port {sim.port}"
    out.print(f"known_hosts line for SSH clients (again: {again}):")
    _print_plain(sim.home.known_hosts_line(sim.host, sim.port))


def _print_plain(line: str) -> None:
    """A line as it is (rich would take ``[localhost]`` for markup), flushed at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@app.command()
def hostkey(home: Home, host: Annotated[str | None, typer.Option(
                metavar="HOST",
                help="Host name clients connect to (default: host in simulator.toml).")
            ] = None,
            port: Annotated[int | None, typer.Option(
                metavar="PORT", help="Port clients connect to (default: port in simulator.toml).")
            ] = None) -> None:
    """Print the known_hosts line of the simulator (append it to ~/.ssh/known_hosts)."""
    target, config = _loaded(home)
    port = config.port if port is None else port
    if port == 0:
        raise CliError("port 0: give the port the simulator listens on with --port PORT "
                       "(the first line of 'fla-sim serve' shows it)")
    _print_plain(target.known_hosts_line(config.host if host is None else host, port))


@cert_app.command("issue")
def cert_issue(
    home: Home,
    company: Kbo,
    out_dir: Annotated[Path, typer.Option(
        "--out", metavar="DIR",
        help=f"Folder for {', '.join(SIGNER_FILES)} (created when missing).")],
    channel: Annotated[str | None, typer.Option(
        metavar="USER", help="Register the certificate for this channel of the company; the "
                             "channel then accepts its registered certificates only.")] = None,
    days: Annotated[int, typer.Option(metavar="DAYS",
                                      help="Validity (never beyond the CA's).")] = 730,
    key_type: Annotated[str, typer.Option(
        "--key-type", metavar="TYPE", help=", ".join(SIGNING_KEY_TYPES) + ".")] = "rsa2048",
) -> None:
    """Issue a signing key and certificate from the simulator CA that the company's channels
    accept; the key is encrypted with $FLA_KEY_PASSWORD when set (asked on a terminal)."""
    target, config = _loaded(home)
    company = normalize_kbo(company)
    if key_type not in SIGNING_KEY_TYPES:
        raise CliError(f"--key-type {key_type}: the channel accepts {', '.join(SIGNING_KEY_TYPES)}"
                       " (spec 6.3)")
    if channel is not None:
        registered = config.channel(channel)
        if registered is None:
            raise CliError(f"--channel {channel}: no such channel in {target.config_path}; "
                           "see 'fla-sim channel list'")
        if registered.company != company:
            raise CliError(f"--channel {channel} belongs to company {registered.company}, not "
                           f"{company}; give --company {registered.company}")
    key_path, cert_path, p12_path = (out_dir / name for name in SIGNER_FILES)
    for path in (key_path, cert_path, p12_path):
        if path.exists():
            raise CliError(f"{path} exists; choose another --out folder (keys are never "
                           "overwritten)")
    ck = target.issue_signer(company, days=days, key_type=cast("KeyType", key_type))
    password = _new_password()
    _write_signer(ck, key_path, cert_path, p12_path, password, company)
    rel = target.register_certificate(channel, cert_path) if channel is not None else None
    _print_issued(target, ck, (key_path, cert_path, p12_path), password is not None, rel)


def _new_password() -> bytes | None:
    """The new key's password: $FLA_KEY_PASSWORD (as ``fla`` reads it), else asked on a
    terminal; empty or neither means no password."""
    value = os.environ.get(PASSWORD_ENV)
    if value is None and sys.stdin.isatty():
        value = typer.prompt("Password for the new key (empty: none)", hide_input=True,
                             default="", show_default=False, confirmation_prompt=True, err=True)
    return value.encode() if value else None


def _write_signer(ck: CertifiedKey, key_path: Path, cert_path: Path, p12_path: Path,
                  password: bytes | None, company: str) -> None:
    from fla_core import pki

    key_path.parent.mkdir(parents=True, exist_ok=True)
    pki.write_pem(key_path, ck.key, password)
    pki.write_pem(cert_path, [ck.cert, *ck.chain])
    pki.write_pkcs12(p12_path, ck, password, name=f"fla signer {company}")


def _print_issued(home: SimulatorHome, ck: CertifiedKey, paths: tuple[Path, Path, Path],
                  encrypted: bool, registered: str | None) -> None:
    cert = ck.cert
    secret = "encrypted with $FLA_KEY_PASSWORD" if encrypted else "not encrypted"
    out.print(f"issued by the simulator CA {home.ca_cert_path}")
    out.print(f"  key          {paths[0]} (mode 0600, {secret})")
    out.print(f"  certificate  {paths[1]}")
    out.print(f"  PKCS#12      {paths[2]} (mode 0600, {secret})")
    out.print(f"  subject      {_subject(cert)}")
    out.print(f"  valid        {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
              f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; key usage digitalSignature, "
              "nonRepudiation")
    if registered is not None:
        out.print(f"  registered   {registered}")
    config = home.load()
    if ck.anchor not in home.trust_store(config).anchors:  # removed from [trust] anchors
        out.print(f"  refused by   every channel (605: the CA is not a trust anchor; add it back "
                  f"with 'fla-sim trust add {home.path} {home.ca_cert_path}')")
        return
    company = _company_of(cert)
    for channel in config.channels:
        if channel.company != company:
            continue
        if not channel.certificates or registered in channel.certificates:
            out.print(f"  accepted by  channel {channel.user}")
        else:
            out.print(f"  refused by   channel {channel.user} (153: it accepts its registered "
                      f"certificates only; issue with --channel {channel.user})")


def _subject(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    names = {NameOID.COUNTRY_NAME: "C", NameOID.COMMON_NAME: "CN",
             NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier"}
    return ", ".join(f"{names.get(a.oid, a.oid.dotted_string)}={a.value!s}"
                     for a in cert.subject)


def _company_of(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    ids = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)
    return str(ids[0].value).removeprefix("NTRBE-") if ids else ""


@app.command()
def status(home: Home, as_json: Json = False) -> None:
    """Show the journal: sets and their states, received files, answers, set events."""
    target = _home(home)
    report = _status_report(target)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    _print_status(report)


def _status_report(home: SimulatorHome) -> dict[str, list[dict[str, Any]]]:
    if not home.journal_path.exists():
        return {"sets": [], "files": [], "answers": [], "set_events": []}
    from fla_sim.store import Journal

    journal = Journal(home.journal_path)
    try:
        return {
            "sets": [_row(s) for s in journal.sets()],
            "files": [_row(f) for f in journal.files(state=None)],
            "answers": [_row(a, drop=("content",)) for a in journal.answers()],
            # e.g. an FS closed after its GO: what the sender must change (docs/clients.md)
            "set_events": [_row(e, drop=("id",)) for e in journal.set_events()],
        }
    finally:
        journal.close()


def _row(obj: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    row = {k: v for k, v in dataclasses.asdict(obj).items() if k not in drop}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _print_status(report: dict[str, list[dict[str, Any]]]) -> None:
    sets = Table("channel", "dir", "stem", "state", "ticket", "updated", title="sets")
    for s in report["sets"]:
        sets.add_row(s["channel"], s["directory"], s["stem"], s["state"], s["ticket"] or "",
                     s["updated_at"])
    files = Table("channel", "dir", "name", "size", "state", title="files")
    for f in report["files"]:
        files.add_row(f["channel"], f["directory"], f["name"], str(f["size"]), f["state"])
    answers = Table("channel", "dir", "name", "kind", "trigger", "result", "written",
                    title="answers")
    for a in report["answers"]:
        answers.add_row(a["channel"], a["directory"], a["name"], a["kind"], a["trigger"],
                        a["result_code"], "yes" if a["written"] else "no")
    for table in (sets, files, answers):
        out.print(table)
    if report["set_events"]:  # only when something needs the sender's attention
        events = Table("at", "channel", "dir", "stem", "event", "what happened",
                       title="set events")
        for e in report["set_events"]:
            events.add_row(e["at"], e["channel"], e["directory"], e["stem"], e["kind"],
                           e["text"])
        out.print(events)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``fla-sim``; returns the exit code."""
    return SIM.run(app, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
