"""The catalog queries of the grant audit: a fixed number of statements whatever the object count
(one per concern; relations and sequences share one pass over pg_class).

Each statement aggregates on the server and returns the audited count plus only the objects
that miss something, so 100,000 healthy relations cost one row, not 100,000.
Privileges are tested one at a time (a multi-privilege has_*_privilege(role, obj, 'USAGE,SELECT')
is true when ANY of them is held). Relation privileges ignore the schema's USAGE, so schemas
have their own query. Names come back through quote_ident(), PostgreSQL's own quoting rules.
Parameters: %(role)s the dump role name, %(exclude)s the excluded schema names.

What pg_dump (15) reads, as measured by tests/test_grants_differential.py against the real one:
it LOCKs every table and partitioned table it dumps (ACCESS SHARE: table-level SELECT, column
grants do not count), COPYs every table and partition on its own (SELECT on the parent gives
nothing on a partition or an inheritance child), reads each sequence with SELECT, opens each
large object, and runs with row_security = off, so a table with row-level security stops it
unless the role has BYPASSRLS, or owns the table and it is not FORCEd. It only reads the
definitions of views, materialized views and foreign tables, and of extension members unless
the extension marked them as configuration (pg_extension_config_dump): those are dumped.
"""

# The dump role once, so that per-object calls take an oid, not a name to look up.
_ROLE = """role AS MATERIALIZED (SELECT oid AS r, rolsuper AS super, rolbypassrls AS bypass
                        FROM pg_roles WHERE rolname = %(role)s)"""

# Every non-system schema that is not deliberately excluded.
_AUDITED = """audited AS MATERIALIZED (
    SELECT n.oid, n.nspname, n.nspowner FROM pg_namespace n
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
      AND n.nspname <> ALL(%(exclude)s::text[]))"""

# Relations that belong to an extension (pg_dump writes CREATE EXTENSION, not them), with
# whether the extension marked them as configuration (then pg_dump dumps their rows).
# Reached through the index on the referenced extension, not a scan of pg_depend.
_EXT = """ext AS MATERIALIZED (
    SELECT d.objid AS oid, bool_or(d.objid = ANY(e.extconfig)) AS config
    FROM pg_extension e JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
    WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' GROUP BY d.objid)"""

ROLE = """
SELECT r.oid IS NOT NULL, coalesce(r.rolcanlogin, false), coalesce(r.rolsuper, false),
       coalesce(r.rolvaliduntil < now(), false),
       CASE WHEN current_setting('server_version_num')::int >= 140000 AND r.oid IS NOT NULL
            THEN pg_has_role(r.oid, 'pg_read_all_data', 'USAGE') ELSE false END,
       coalesce(has_database_privilege(r.oid, d.oid, 'CONNECT'), false),
       d.datname, quote_ident(d.datname), quote_ident(%(role)s),
       current_setting('server_version'), current_setting('server_version_num')::int,
       current_setting('transaction_read_only'),
       coalesce(r.rolbypassrls, false), current_setting('lo_compat_privileges')
FROM pg_database d LEFT JOIN pg_roles r ON r.rolname = %(role)s
WHERE d.datname = current_database()
"""

# Schemas without USAGE, each with whether it holds something pg_dump reads (a table, a
# partitioned table, a sequence, or an extension's configuration table): only then does
# pg_dump fail. The EXISTS runs for the schemas lacking USAGE only (aggregate FILTER first).
SCHEMAS = f"""
WITH {_ROLE}, {_AUDITED}, {_EXT}
SELECT count(*)::int,
       coalesce(json_agg(json_build_array(
                    quote_ident(a.nspname), quote_ident(pg_get_userbyid(a.nspowner)),
                    EXISTS (SELECT 1 FROM pg_class c LEFT JOIN ext x ON x.oid = c.oid
                            WHERE c.relnamespace = a.oid AND c.relkind IN ('r', 'p', 'S')
                              AND coalesce(x.config, true)))
                ORDER BY a.nspname)
                FILTER (WHERE NOT has_schema_privilege(role.r, a.oid, 'USAGE')), '[]')
FROM audited a, role
"""

# Tables, partitions, partitioned tables, views, materialized views, foreign tables and
# sequences, per schema, in one pass over pg_class. Per problem object: name, relkind, owner,
# SELECT held, USAGE held (sequences; true for the others), row-level security stops pg_dump,
# FORCE ROW LEVEL SECURITY. No ORDER BY inside the aggregates so that the server can hash-group
# 100,000 rows instead of sorting them (the caller orders the few).
# SELECT and USAGE are read from relacl itself, the way has_table_privilege decides them: not
# through has_*_privilege per object, which looks every relation up in the syscache one by one
# (on a fresh connection, most of the audit's time). `held` is PUBLIC (0) plus every role whose
# privileges the dump role has (itself included). A NULL relacl means the owner's defaults: all
# to the owner, nothing to PUBLIC; an explicit relacl is all there is (an owner can revoke its
# own SELECT). Each distinct ACL is exploded once, not once per relation. A relation's SELECT
# bit is its sequence's SELECT too; USAGE exists for sequences only. Superuser has everything;
# pg_read_all_data (a membership, never an ACL grantee) gives SELECT but not USAGE.
# Row-level security matters on plain tables and partitions only: pg_dump COPYs each partition
# itself, and a policy on the partitioned parent does not apply to that.
RELATIONS = f"""
WITH {_ROLE}, {_AUDITED}, {_EXT},
held AS MATERIALIZED (
    SELECT 0::oid AS g UNION ALL SELECT x.oid FROM pg_roles x, role WHERE pg_has_role(role.r, x.oid, 'USAGE')),
reads_all AS MATERIALIZED (
    SELECT role.super OR EXISTS (SELECT 1 FROM pg_roles x JOIN held h ON h.g = x.oid
                                 WHERE x.rolname = 'pg_read_all_data') AS sel FROM role),
scan AS MATERIALIZED (
    SELECT c.relnamespace, c.relname, c.relkind, c.relowner, c.relforcerowsecurity, c.relrowsecurity, c.relacl
    FROM pg_class c JOIN audited a ON c.relnamespace = a.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LEFT JOIN ext x ON x.oid = c.oid WHERE coalesce(x.config, true)),
acls AS MATERIALIZED (
    SELECT a.relacl,
           EXISTS (SELECT 1 FROM aclexplode(a.relacl) x JOIN held h ON h.g = x.grantee
                   WHERE x.privilege_type = 'SELECT') AS sel,
           EXISTS (SELECT 1 FROM aclexplode(a.relacl) x JOIN held h ON h.g = x.grantee
                   WHERE x.privilege_type = 'USAGE') AS usage
    FROM (SELECT DISTINCT relacl FROM scan WHERE relacl IS NOT NULL) a),
rel AS (
    SELECT c.relnamespace, c.relname, c.relkind, c.relowner, c.relforcerowsecurity AS forced,
           e.sel OR CASE WHEN c.relacl IS NULL THEN c.relowner IN (SELECT g FROM held) ELSE j.sel END AS sel,
           CASE WHEN c.relkind <> 'S' OR role.super THEN true
                WHEN c.relacl IS NULL THEN c.relowner IN (SELECT g FROM held) ELSE j.usage END AS usage,
           CASE WHEN c.relkind = 'r' AND c.relrowsecurity AND NOT role.super AND NOT role.bypass
                THEN c.relforcerowsecurity OR NOT pg_has_role(role.r, c.relowner, 'USAGE')
                ELSE false END AS rls
    FROM scan c LEFT JOIN acls j ON j.relacl = c.relacl, role, reads_all e)
SELECT quote_ident(a.nspname), g.n_rel, g.n_seq, g.problems
FROM (SELECT relnamespace, (count(*) FILTER (WHERE relkind <> 'S'))::int AS n_rel,
             (count(*) FILTER (WHERE relkind = 'S'))::int AS n_seq,
             coalesce(json_agg(json_build_array(quote_ident(relname), relkind, quote_ident(pg_get_userbyid(relowner)),
                                                sel, usage, rls, forced))
                      FILTER (WHERE NOT sel OR NOT usage OR rls), '[]') AS problems
      FROM rel GROUP BY relnamespace) g JOIN audited a ON a.oid = g.relnamespace
"""

# Large objects per owner: how many, how many the dump role cannot SELECT, and LO_LISTED of
# those. SELECT is read from the ACL itself (has_largeobject_privilege only came with PostgreSQL
# 17): NULL means the owner's defaults; a grant counts when it names PUBLIC or a role whose
# privileges the dump role has (ownership works the same way). Neither pg_read_all_data nor
# BYPASSRLS opens a large object; superuser does. Objects are grouped by (owner, ACL) first, so
# a million objects granted alike cost one aclexplode, not a million. The owner's and the dump role's
# oids come back too: the fix for many objects names roles by oid only (no name inside its DO body).
LO_LISTED = 200
LARGE_OBJECTS = f"""
WITH {_ROLE},
acls AS (SELECT lomowner, lomacl, count(*)::int AS n, (array_agg(oid::bigint))[1:{LO_LISTED}] AS oids
         FROM pg_largeobject_metadata GROUP BY lomowner, lomacl),
judged AS (SELECT a.*, role.super OR EXISTS (
                SELECT 1 FROM aclexplode(coalesce(a.lomacl, acldefault('L', a.lomowner))) x
                WHERE x.privilege_type = 'SELECT' AND (x.grantee = 0 OR pg_has_role(role.r, x.grantee, 'USAGE')))
                AS sel
           FROM acls a, role)
SELECT quote_ident(pg_get_userbyid(lomowner)), sum(n)::int, coalesce(sum(n) FILTER (WHERE NOT sel), 0)::int,
       coalesce((SELECT array_agg(o ORDER BY o) FROM (SELECT unnest(oids) AS o FROM judged j
                 WHERE j.lomowner = judged.lomowner AND NOT j.sel LIMIT {LO_LISTED}) first), '{{}}'),
       lomowner::bigint, (SELECT r::bigint FROM role)
FROM judged GROUP BY lomowner
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
