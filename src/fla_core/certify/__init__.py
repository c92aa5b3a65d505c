"""Certification: a catalogue of conformance cases run over a supplier's test output, and the
report (statement, cases, evidence) that people and CI read (``docs/certify.md``)."""
