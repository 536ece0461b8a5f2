import threading
from django.db import connection
def test_zz(transactional_db):
    with connection.cursor() as c:
        c.execute("select pid, state, backend_start, query from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()")
        print("ACTIVITY", c.fetchall())
    print("THREADS", [t.name for t in threading.enumerate()])
