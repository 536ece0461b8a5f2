"""Test tooling shared by the test folders and the proofs (nothing here is a test).

conftest.py files only define fixtures and hooks; everything a test imports comes from
here or from sandbox.testing (the sandbox process and its control client, which the
benchmarks use too):

- atlassian: Atlassian's URLs, `token_reply`, `token_calls`
- connections: the connection factory, fresh reads, events, stored ciphertext
- clock: the fake integrations.clock
- accounts: the test users' passwords, signed-in clients
- oauth: the connect flow as tests drive it, and the ways it can fail
- secrets: `assert_no_secrets`, the one leak check, and what it scans
- processes: manage.py and refresh_tokens in child processes
- browser: chromium and the end-to-end journey
- unsafe, gated_manage: launchers for the control run and for racing processes
"""
