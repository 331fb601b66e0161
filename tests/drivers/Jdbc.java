// PgJDBC at its defaults (prepareThreshold=5, autocommit on/off, batches)
// through shardbouncer. Run: java -cp /usr/share/java/postgresql.jar tests/drivers/Jdbc.java
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicInteger;

public class Jdbc {
    static final Map<String, String> ENV = System.getenv();
    static final String HOST = ENV.getOrDefault("SB_HOST", "127.0.0.1");
    static final String PORT = ENV.get("SB_PORT");
    static final String USER = ENV.getOrDefault("SB_USER", "app");
    static final String PASSWORD = ENV.getOrDefault("SB_PASSWORD", "secret");
    static final String DB = ENV.getOrDefault("SB_DB", "app");
    static final String SHARDED_DB = ENV.getOrDefault("SB_SHARDED_DB", "sharded");
    static final String SINGLE_PG_PORT = ENV.get("SB_SINGLE_PG_PORT");
    static final Map<String, String> TENANT_PORTS = new LinkedHashMap<>();
    static final int WORKERS = 10;
    static final int LOOPS = 25;
    static final AtomicInteger CHECKS = new AtomicInteger();

    static void fail(String msg) {
        System.err.println("FAIL: " + msg);
        System.err.flush();
        Runtime.getRuntime().halt(1);
    }

    static void eq(String what, Object got, Object want) {
        if (!Objects.equals(got, want)) fail(what + ": got " + got + ", want " + want);
        CHECKS.incrementAndGet();
    }

    static void step(String msg) {
        System.out.println("-- " + msg);
        System.out.flush();
    }

    static Connection connect(String db, String params) throws SQLException {
        String url = "jdbc:postgresql://" + HOST + ":" + PORT + "/" + db + (params.isEmpty() ? "" : "?" + params);
        return DriverManager.getConnection(url, USER, PASSWORD);
    }

    interface SqlBody { void run() throws Exception; }

    static void expectSqlState(String what, String state, SqlBody body) throws Exception {
        try {
            body.run();
        } catch (SQLException e) {
            if (!state.equals(e.getSQLState())) fail(what + ": got " + e.getSQLState() + " " + e.getMessage() + ", want SQLSTATE " + state);
            CHECKS.incrementAndGet();
            return;
        }
        fail(what + ": no error, want SQLSTATE " + state);
    }

    static String one(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) return null;
                StringBuilder sb = new StringBuilder(rs.getString(1));
                for (int k = 2; k <= rs.getMetaData().getColumnCount(); k++) sb.append('|').append(rs.getString(k));
                if (rs.next()) fail("more than one row for " + sql);
                return sb.toString();
            }
        }
    }

    static void worker(int w) throws Exception {
        int base = 1000 * (w + 1);
        try (Connection c = connect(DB, "")) {
            eq("w" + w + " port", one(c, "SELECT current_setting('port')"), SINGLE_PG_PORT);
            // autocommit on; one PreparedStatement executed many times (named S_n after 5).
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO items (id, name, n) VALUES (?, ?, ?)")) {
                for (int i = 0; i < LOOPS; i++) {
                    ins.setInt(1, base + i);
                    ins.setString(2, "w" + w + "-" + i);
                    ins.setLong(3, i * 10L);
                    eq("w" + w + " insert count " + i, ins.executeUpdate(), 1);
                }
            }
            try (PreparedStatement sel = c.prepareStatement("SELECT name, n FROM items WHERE id = ?")) {
                for (int i = 0; i < LOOPS; i++) {
                    sel.setInt(1, base + i);
                    try (ResultSet rs = sel.executeQuery()) {
                        eq("w" + w + " select has row " + i, rs.next(), true);
                        eq("w" + w + " select name " + i, rs.getString(1), "w" + w + "-" + i);
                        eq("w" + w + " select n " + i, rs.getLong(2), i * 10L);
                    }
                }
            }
            // Fresh PreparedStatement objects for the same SQL (driver's statement cache).
            for (int i = 0; i < LOOPS; i++) {
                eq("w" + w + " cached select " + i, one(c, "SELECT n FROM items WHERE id = ?", base + i), String.valueOf(i * 10));
            }
            // autocommit off: BEGIN goes out in the same batch as the first statement.
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO items (id, name, n) VALUES (?, ?, ?)")) {
                ins.setInt(1, base + 500); ins.setString(2, "committed"); ins.setLong(3, 1);
                ins.executeUpdate();
                eq("w" + w + " in-tx", one(c, "SELECT count(*) FROM items WHERE id = ?", base + 500), "1");
                c.commit();
                ins.setInt(1, base + 600); ins.setString(2, "rolled back"); ins.setLong(3, 1);
                ins.executeUpdate();
                eq("w" + w + " sees own insert", one(c, "SELECT count(*) FROM items WHERE id = ?", base + 600), "1");
                c.rollback();
                eq("w" + w + " committed kept, rolled back gone",
                    one(c, "SELECT count(*) FROM items WHERE id IN (?, ?)", base + 500, base + 600), "1");
                c.commit();
                // Error inside a transaction, then rollback.
                ins.setInt(1, base + 700); ins.setString(2, "doomed"); ins.setLong(3, 1);
                ins.executeUpdate();
                expectSqlState("w" + w + " division by zero", "22012", () -> one(c, "SELECT 1 / ?", 0));
                expectSqlState("w" + w + " in failed tx", "25P02", () -> one(c, "SELECT 1"));
                c.rollback();
                eq("w" + w + " doomed insert gone", one(c, "SELECT count(*) FROM items WHERE id = ?", base + 700), "0");
                c.commit();
                // Many short transactions with the prepared statement inside (named after 5).
                for (int i = 0; i < LOOPS; i++) {
                    ins.setInt(1, base + 100 + i); ins.setString(2, "tx"); ins.setLong(3, i);
                    ins.executeUpdate();
                    if (i % 2 == 0) c.commit(); else c.rollback();
                }
                eq("w" + w + " tx loop", one(c, "SELECT count(*) FROM items WHERE id BETWEEN ? AND ?", base + 100, base + 124), "13");
                c.commit();
            }
            // Batch insert inside a transaction.
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO items (id, name, n) VALUES (?, ?, ?)")) {
                for (int k = 0; k < 20; k++) {
                    ins.setInt(1, base + 200 + k); ins.setString(2, "batch"); ins.setLong(3, k);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                eq("w" + w + " batch counts", counts.length, 20);
                c.commit();
            }
            eq("w" + w + " batch rows", one(c, "SELECT count(*) FROM items WHERE name = 'batch' AND id BETWEEN ? AND ?", base, base + 999), "20");
            c.commit();
            // Batch insert in autocommit, twice (the second one runs the prepared statement).
            c.setAutoCommit(true);
            for (int round = 0; round < 3; round++) {
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO items (id, name, n) VALUES (?, ?, ?)")) {
                    for (int k = 0; k < 10; k++) {
                        ins.setInt(1, base + 300 + round * 10 + k); ins.setString(2, "acbatch"); ins.setLong(3, k);
                        ins.addBatch();
                    }
                    ins.executeBatch();
                }
            }
            eq("w" + w + " autocommit batch rows", one(c, "SELECT count(*) FROM items WHERE name = 'acbatch' AND id BETWEEN ? AND ?", base, base + 999), "30");
            // Unique violation with the prepared statement, connection still usable.
            expectSqlState("w" + w + " duplicate", "23505", () -> {
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO items (id, name, n) VALUES (?, ?, ?)")) {
                    ins.setInt(1, base); ins.setString(2, "dup"); ins.setLong(3, 0);
                    ins.executeUpdate();
                }
            });
            // Plain Statement (simple/unnamed), and an enum.
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 'happy'::mood")) {
                rs.next();
                eq("w" + w + " enum", rs.getString(1), "happy");
            }
        }
    }

    static void shardedStartupTenant() throws Exception {
        String port = TENANT_PORTS.get("42");
        try (Connection c = connect(SHARDED_DB, "options=-c%20tenant_id=42")) {
            eq("startup tenant port", one(c, "SELECT current_setting('port')"), port);
            try (PreparedStatement ps = c.prepareStatement("SELECT name, current_setting('port') FROM accounts WHERE name = ?")) {
                for (int i = 0; i < LOOPS; i++) {
                    ps.setString(1, "owner of 42");
                    try (ResultSet rs = ps.executeQuery()) {
                        eq("startup tenant row " + i, rs.next(), true);
                        eq("startup tenant name " + i, rs.getString(1) + "|" + rs.getString(2), "owner of 42|" + port);
                    }
                }
            }
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO accounts VALUES (?, ?)")) {
                ins.setString(1, "42"); ins.setString(2, "temp");
                ins.executeUpdate();
            }
            c.rollback();
            eq("startup tenant rollback", one(c, "SELECT count(*) FROM accounts WHERE name = 'temp'"), "0");
            c.commit();
        }
    }

    // SET tenant_id through PgJDBC: every statement goes as Parse/Bind/Execute, and
    // a PreparedStatement run prepareThreshold (5) times becomes a named
    // server-side statement that is only bound afterwards.
    static void shardedSetTenant() throws Exception {
        try (Connection c = connect(SHARDED_DB, "")) {
            for (int i = 0; i < 3; i++) {
                for (Map.Entry<String, String> e : TENANT_PORTS.entrySet()) {
                    try (Statement st = c.createStatement()) {
                        st.execute("SET tenant_id = '" + e.getKey() + "'");
                    }
                    eq("SET tenant " + e.getKey() + " loop " + i,
                        one(c, "SELECT current_setting('port'), count(*) FROM accounts WHERE name = ?", "owner of " + e.getKey()),
                        e.getValue() + "|1");
                }
            }
            for (Map.Entry<String, String> e : TENANT_PORTS.entrySet()) {
                try (PreparedStatement ps = c.prepareStatement("SET tenant_id = '" + e.getKey() + "'")) {
                    for (int i = 0; i < 8; i++) {
                        ps.execute();
                        eq("prepared SET tenant " + e.getKey() + " run " + i,
                            one(c, "SELECT current_setting('port'), count(*) FROM accounts WHERE name = ?", "owner of " + e.getKey()),
                            e.getValue() + "|1");
                    }
                }
            }
            try (Statement st = c.createStatement()) {
                st.execute("RESET tenant_id");
            }
            setTenantInTransactions(c, "");
            try (Statement st = c.createStatement()) {
                st.execute("RESET tenant_id");
            }
            // Server-prepared from the first use (prepareThreshold=-1): PgJDBC
            // sends BEGIN with the SET's Parse and Describe, and its Bind and
            // Execute in the next batch (probe CC: refused, 0A000).
            try (Connection p = connect(SHARDED_DB, "prepareThreshold=-1")) {
                setTenantInTransactions(p, "prepareThreshold=-1: ");
            }
            // A tenant that is not in the map's key space is refused at the SET.
            expectSqlState("SET of an empty tenant", "22023", () -> {
                try (Statement st = c.createStatement()) { st.execute("SET tenant_id = ''"); }
            });
        }
    }

    // autocommit off (Spring's @Transactional), SET tenant_id in each
    // transaction. `label` names the connection's mode in failures.
    static void setTenantInTransactions(Connection c, String label) throws Exception {
        // autocommit off (Spring's @Transactional): the BEGIN goes out in the
        // SET's own batch. SET LOCAL pins this transaction only; an insert
        // rolled back is gone, one committed stays, on the tenant's shard.
        c.setAutoCommit(false);
        for (Map.Entry<String, String> e : TENANT_PORTS.entrySet()) {
            for (String form : new String[] {"SET LOCAL", "SET"}) {
                try (Statement st = c.createStatement()) {
                    st.execute(form + " tenant_id = '" + e.getKey() + "'");
                }
                eq(label + form + " after BEGIN, tenant " + e.getKey(),
                    one(c, "SELECT current_setting('port'), count(*) FROM accounts WHERE name = ?", "owner of " + e.getKey()),
                    e.getValue() + "|1");
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO accounts (tenant_id, name) VALUES (?, ?)")) {
                    ps.setString(1, e.getKey());
                    ps.setString(2, "jdbc tx " + form);
                    ps.executeUpdate();
                }
                if (form.equals("SET LOCAL")) c.rollback(); else c.commit();
            }
            try (Statement st = c.createStatement()) {
                st.execute("SET tenant_id = '" + e.getKey() + "'");
            }
            eq(label + "commit kept, rollback gone, tenant " + e.getKey(),
                one(c, "SELECT current_setting('port'), count(*) FROM accounts WHERE name LIKE ?", "jdbc tx %"),
                e.getValue() + "|1");
            try (Statement st = c.createStatement()) {
                st.execute("DELETE FROM accounts WHERE name LIKE 'jdbc tx %'");
            }
            c.commit();
        }
        c.setAutoCommit(true);
    }

    static void shardedParamTenant(int w) throws Exception {
        try (Connection c = connect(SHARDED_DB, "")) {
            try (PreparedStatement ps = c.prepareStatement("SELECT name, current_setting('port') FROM accounts WHERE tenant_id = ?")) {
                for (int i = 0; i < LOOPS; i++) {
                    for (Map.Entry<String, String> e : TENANT_PORTS.entrySet()) {
                        ps.setString(1, e.getKey());
                        try (ResultSet rs = ps.executeQuery()) {
                            eq("w" + w + " tenant " + e.getKey() + " row " + i, rs.next(), true);
                            eq("w" + w + " tenant " + e.getKey() + " loop " + i, rs.getString(1) + "|" + rs.getString(2), "owner of " + e.getKey() + "|" + e.getValue());
                        }
                    }
                }
            }
            // autocommit off: BEGIN piggy-backed on the first statement, which names the tenant.
            c.setAutoCommit(false);
            for (String t : TENANT_PORTS.keySet()) {
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO accounts (tenant_id, name) VALUES (?, ?)")) {
                    ins.setString(1, t); ins.setString(2, "tmp" + w);
                    ins.executeUpdate();
                }
                eq("w" + w + " tenant " + t + " sees insert", one(c, "SELECT count(*) FROM accounts WHERE tenant_id = ? AND name = ?", t, "tmp" + w), "1");
                c.rollback();
                eq("w" + w + " tenant " + t + " rolled back", one(c, "SELECT count(*) FROM accounts WHERE tenant_id = ? AND name = ?", t, "tmp" + w), "0");
                c.commit();
            }
            // autocommit off, executeBatch of a statement new to the connection:
            // PgJDBC sends BEGIN with the statement's Parse and Describe first, and
            // the tenant only in the Binds after it.
            int n = 0;
            for (String t : TENANT_PORTS.keySet()) {
                n++;
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO accounts (tenant_id, name) VALUES (?, ?) /* batch " + n + " */")) {
                    for (int i = 0; i < 3; i++) {
                        ins.setString(1, t); ins.setString(2, "batch" + w);
                        ins.addBatch();
                    }
                    int[] counts = ins.executeBatch();
                    eq("w" + w + " tenant " + t + " batch", counts.length, 3);
                }
                // Rolled back, so the other workers never see the rows.
                eq("w" + w + " tenant " + t + " batch rows",
                    one(c, "SELECT current_setting('port'), count(*) FROM accounts WHERE tenant_id = ? AND name = ?", t, "batch" + w),
                    TENANT_PORTS.get(t) + "|3");
                c.rollback();
            }
            // A batch the router refuses (its rows name no tenant) in the
            // transaction PgJDBC opens with it: the BEGIN, sent ahead of the
            // statement's Parse, is held, and the transaction fails with no
            // server. rollback() then sends ROLLBACK through Parse/Bind/Execute,
            // which got 25P02, so the connection could never leave it.
            for (String t : TENANT_PORTS.keySet()) {
                expectSqlState("w" + w + " no tenant in a batch", "42P17", () -> {
                    try (PreparedStatement ins = c.prepareStatement("INSERT INTO accounts (name) VALUES (?) /* untenanted " + t + " */")) {
                        for (int i = 0; i < 2; i++) {
                            ins.setString(1, "nobody" + w);
                            ins.addBatch();
                        }
                        ins.executeBatch();
                    }
                });
                expectSqlState("w" + w + " failed transaction", "25P02",
                    () -> one(c, "SELECT count(*) FROM accounts WHERE tenant_id = ?", t));
                c.rollback();
                eq("w" + w + " tenant " + t + " after rollback",
                    one(c, "SELECT current_setting('port') FROM accounts WHERE tenant_id = ?", t), TENANT_PORTS.get(t));
                c.commit();
            }
            // autocommit off, a SET LOCAL that names no tenant first: PgJDBC
            // sends the BEGIN and the SET LOCAL in one batch. It pinned the
            // transaction to the default shard; now it is held with the BEGIN
            // and runs inside the transaction on the tenant's shard.
            for (String t : TENANT_PORTS.keySet()) {
                try (java.sql.Statement st = c.createStatement()) {
                    st.execute("SET LOCAL statement_timeout = '7s'");
                }
                eq("w" + w + " tenant " + t + " after SET LOCAL",
                    one(c, "SELECT current_setting('port'), current_setting('statement_timeout') FROM accounts WHERE tenant_id = ?", t),
                    TENANT_PORTS.get(t) + "|7s");
                c.commit();
            }
            for (int i = 0; i < LOOPS; i++) {
                for (Map.Entry<String, String> e : TENANT_PORTS.entrySet()) {
                    eq("w" + w + " tx tenant " + e.getKey() + " " + i,
                        one(c, "SELECT current_setting('port') FROM accounts WHERE tenant_id = ?", e.getKey()), e.getValue());
                    c.commit();
                }
            }
        }
    }

    static void parallel(String what, int n, ThrowingInt body) throws Exception {
        ExecutorService ex = Executors.newFixedThreadPool(n);
        List<Future<?>> fs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            final int w = i;
            fs.add(ex.submit(() -> { body.run(w); return null; }));
        }
        for (Future<?> f : fs) {
            try {
                f.get(180, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                java.io.StringWriter sw = new java.io.StringWriter();
                e.getCause().printStackTrace(new java.io.PrintWriter(sw));
                fail(what + ": " + sw);
            }
        }
        ex.shutdown();
    }

    interface ThrowingInt { void run(int w) throws Exception; }

    // No tenant at connect: DatabaseMetaData (catalog reads naming no tenant)
    // runs on any shard; a PreparedStatement with an array parameter, and a
    // result of the application's enum, run on the tenant's shard.
    static void shardedMetadata() throws Exception {
        try (Connection c = connect(SHARDED_DB, "")) {
            DatabaseMetaData md = c.getMetaData();
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "grades", "%")) {
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            eq("getColumns(grades)", cols, List.of("tenant_id:text", "g:grade", "tags:_int8"));
            int tables = 0;
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) if (rs.getString("TABLE_NAME").equals("grades")) tables++;
            }
            eq("getTables finds grades", tables, 1);
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "grades")) {
                eq("getPrimaryKeys(grades) (none)", rs.next(), false);
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT g, tags[2], current_setting('port') FROM grades WHERE tenant_id = ? AND tags @> ?")) {
                for (Map.Entry<String, String> e : TENANT_PORTS.entrySet()) {
                    ps.setString(1, e.getKey());
                    ps.setArray(2, c.createArrayOf("bigint", new Long[] {7L}));
                    try (ResultSet rs = ps.executeQuery()) {
                        eq("grades row of " + e.getKey(), rs.next(), true);
                        eq("grades of " + e.getKey(), rs.getString(1) + "|" + rs.getLong(2) + "|" + rs.getString(3), "high|7|" + e.getValue());
                        eq("column type of g, from the catalog", rs.getMetaData().getColumnTypeName(1), "grade");
                    }
                }
            }
            expectSqlState("a catalog read joined with grades", "42P17", () -> one(c, "SELECT c.relname FROM pg_catalog.pg_class c JOIN grades ON true"));
        }
    }

    public static void main(String[] args) throws Exception {
        for (String kv : ENV.get("SB_TENANT_PORTS").split(",")) {
            String[] p = kv.split("=", 2);
            TENANT_PORTS.put(p[0], p[1]);
        }
        try {
            step("single database, " + WORKERS + " concurrent connections");
            parallel("single database worker", WORKERS, Jdbc::worker);
            step("sharded: tenant in startup options");
            shardedStartupTenant();
            step("sharded: SET tenant_id through the extended protocol");
            shardedSetTenant();
            step("sharded: tenant as a parameter, " + WORKERS + " concurrent connections");
            parallel("sharded worker", WORKERS, Jdbc::shardedParamTenant);
            step("sharded: DatabaseMetaData with no tenant");
            shardedMetadata();
        } catch (Exception e) {
            java.io.StringWriter sw = new java.io.StringWriter();
            e.printStackTrace(new java.io.PrintWriter(sw));
            fail(sw.toString());
        }
        System.out.println("OK " + CHECKS.get() + " checks");
        System.out.flush();
        System.exit(0);
    }
}
