// PgJDBC session for capture.sh (java -cp postgresql.jar Capture.java PORT):
// prepared statements past prepareThreshold, batches, transactions, COPY.
import java.io.StringReader;
import java.sql.*;
import org.postgresql.copy.CopyManager;
import org.postgresql.core.BaseConnection;

public class Capture {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/app?sslmode=disable&ApplicationName=capture";
        try (Connection c = DriverManager.getConnection(url, "app", "secret")) {
            try (PreparedStatement ps = c.prepareStatement("SELECT name, balance FROM accounts WHERE tenant_id = ?")) {
                for (int i = 0; i < 7; i++) { // server-side prepared after 5 uses
                    ps.setLong(1, i % 3 + 1);
                    try (ResultSet rs = ps.executeQuery()) { while (rs.next()) { rs.getString(1); } }
                }
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO accounts (tenant_id, name, balance) VALUES (?, ?, ?)")) {
                for (int i = 0; i < 3; i++) {
                    ps.setLong(1, 42); ps.setString(2, "jdbc" + i); ps.setBigDecimal(3, new java.math.BigDecimal("1.25"));
                    ps.addBatch();
                }
                ps.executeBatch();
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.execute("SELECT 1 FROM accounts WHERE tenant_id = 7 FOR UPDATE");
                try { s.execute("SELECT broken FROM accounts WHERE tenant_id = 7"); } catch (SQLException e) { c.rollback(); }
            }
            c.setAutoCommit(true);
            CopyManager cm = new CopyManager((BaseConnection) c);
            cm.copyIn("COPY accounts (tenant_id, name, balance) FROM STDIN", new StringReader("3\tcopy-jdbc\t2.5\n4\tcopy-jdbc2\t0\n"));
            cm.copyOut("COPY (SELECT * FROM accounts WHERE tenant_id = 3) TO STDOUT", new java.io.StringWriter());
            try (CallableStatement cs = c.prepareCall("{ ? = call upper(?) }")) {
                cs.registerOutParameter(1, Types.VARCHAR); cs.setString(2, "x"); cs.execute();
            }
        }
    }
}
