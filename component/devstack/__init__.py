"""Launchers for the real daemons the gateway talks to (Prosody, PostgreSQL, ngIRCd, Dovecot).

They run on 127.0.0.1 from throwaway directories so that integration tests and the local
``demo`` command exercise real protocol peers instead of mocks. Import the concrete
launchers from their modules (``component.devstack.prosody``, ``.postgres``,
``bridges.irc.devstack``, ``bridges.mail.devstack``); nothing heavy is imported here.
"""
