"""The catalog queries of the grant audit: one statement per concern, whatever the object count.

Each statement aggregates on the server and returns the audited count plus only the objects
that miss something, so 100,000 healthy relations cost one row, not 100,000.
Privileges are tested one at a time: has_*_privilege(role, obj, 'USAGE,SELECT') is true when
ANY of the listed privileges is held. has_table_privilege ignores the schema's USAGE, so schemas
have their own query. Names come back through quote_ident(), PostgreSQL's own quoting rules.
Parameters: %(role)s the dump role name, %(exclude)s the excluded schema names.
"""

# The dump role once, so that per-object calls take an oid, not a name to look up.
_ROLE = "role AS MATERIALIZED (SELECT oid AS r FROM pg_roles WHERE rolname = %(role)s)"

# Every non-system schema that is not deliberately excluded.
_AUDITED = """audited AS MATERIALIZED (
    SELECT n.oid, n.nspname, n.nspowner FROM pg_namespace n
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
      AND n.nspname <> ALL(%(exclude)s::text[]))"""

ROLE = """
SELECT r.oid IS NOT NULL, coalesce(r.rolcanlogin, false), coalesce(r.rolsuper, false),
       coalesce(r.rolvaliduntil < now(), false),
       CASE WHEN current_setting('server_version_num')::int >= 140000 AND r.oid IS NOT NULL
            THEN pg_has_role(r.oid, 'pg_read_all_data', 'USAGE') ELSE false END,
       coalesce(has_database_privilege(r.oid, d.oid, 'CONNECT'), false),
       d.datname, quote_ident(d.datname), quote_ident(%(role)s),
       current_setting('server_version'), current_setting('server_version_num')::int,
       current_setting('transaction_read_only')
FROM pg_database d LEFT JOIN pg_roles r ON r.rolname = %(role)s
WHERE d.datname = current_database()
"""

SCHEMAS = f"""
WITH {_ROLE}, {_AUDITED}
SELECT count(*)::int,
       coalesce(json_agg(json_build_array(quote_ident(a.nspname), quote_ident(pg_get_userbyid(a.nspowner)))
                         ORDER BY a.nspname)
                FILTER (WHERE NOT has_schema_privilege(role.r, a.oid, 'USAGE')), '[]')
FROM audited a, role
"""

# Tables, partitions, partitioned tables, views, materialized views, foreign tables; per schema.
# One pass over pg_class; no ORDER BY inside the aggregates so that the server can hash-group
# 100,000 rows instead of sorting them (the caller orders the few missing ones).
RELATIONS = f"""
WITH {_ROLE}, {_AUDITED}
SELECT quote_ident(a.nspname), count(*)::int,
       coalesce(json_agg(json_build_array(quote_ident(c.relname), c.relkind,
                                          quote_ident(pg_get_userbyid(c.relowner))))
                FILTER (WHERE NOT has_table_privilege(role.r, c.oid, 'SELECT')), '[]')
FROM audited a JOIN pg_class c ON c.relnamespace = a.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f'), role
GROUP BY a.nspname
"""

# USAGE and SELECT tested separately: pg_dump reads each sequence's state with SELECT.
SEQUENCES = f"""
WITH {_ROLE}, {_AUDITED},
seq AS (SELECT a.nspname, c.relname, c.relowner,
               has_sequence_privilege(role.r, c.oid, 'USAGE') AS u,
               has_sequence_privilege(role.r, c.oid, 'SELECT') AS s
        FROM audited a JOIN pg_class c ON c.relnamespace = a.oid AND c.relkind = 'S', role)
SELECT quote_ident(nspname), count(*)::int,
       coalesce(json_agg(json_build_array(quote_ident(relname), u, s, quote_ident(pg_get_userbyid(relowner))))
                FILTER (WHERE NOT (u AND s)), '[]')
FROM seq GROUP BY nspname
"""

# For every (owner, schema) where a role other than the dump role (and not a superuser, and not
# a role whose privileges the dump role inherits) owns the schema or objects in it: its default
# ACL, global (namespace 0) or for that schema, must give the dump role -- directly, via PUBLIC
# or via a role it inherits -- SELECT on tables and USAGE and SELECT on sequences.
DEFAULT_PRIVILEGES = f"""
WITH {_ROLE}, {_AUDITED},
owners AS (
    -- pg_database_owner (owner of public since PG15) stands for the database's owner.
    -- One pass over pg_class for all schemas, not one per schema.
    SELECT DISTINCT a.oid AS nsp, a.nspname,
           CASE WHEN pg_get_userbyid(o.owner) = 'pg_database_owner'
                THEN (SELECT datdba FROM pg_database WHERE datname = current_database()) ELSE o.owner END AS owner
    FROM audited a
    JOIN (SELECT oid AS nsp, nspowner AS owner FROM audited
          UNION SELECT relnamespace, relowner FROM pg_class WHERE relkind IN ('r', 'p', 'v', 'm', 'f', 'S')) o
      ON o.nsp = a.oid),
candidates AS (
    SELECT o.* FROM owners o JOIN pg_roles ow ON ow.oid = o.owner, role
    WHERE NOT ow.rolsuper AND NOT pg_has_role(role.r, o.owner, 'USAGE')),
needs(objtype, priv) AS (VALUES ('r'::"char", 'SELECT'), ('S'::"char", 'USAGE'), ('S'::"char", 'SELECT')),
granted AS (
    SELECT d.defaclrole, d.defaclnamespace, d.defaclobjtype, x.privilege_type
    FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) x, role
    WHERE x.grantee = 0 OR pg_has_role(role.r, x.grantee, 'USAGE'))
SELECT (SELECT count(*)::int FROM candidates),
       (SELECT coalesce(json_agg(json_build_array(quote_ident(pg_get_userbyid(c.owner)), quote_ident(c.nspname),
                                                  n.objtype, n.priv) ORDER BY c.nspname, c.owner, n.objtype DESC),
                        '[]')
        FROM candidates c CROSS JOIN needs n
        WHERE NOT EXISTS (SELECT 1 FROM granted g
                          WHERE g.defaclrole = c.owner AND g.defaclnamespace IN (0, c.nsp)
                            AND g.defaclobjtype = n.objtype AND g.privilege_type = n.priv))
"""
