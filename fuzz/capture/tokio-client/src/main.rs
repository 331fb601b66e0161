//! tokio-postgres session for ../capture.sh: typed binary parameters, statements
//! prepared and reused, a transaction, a pipeline of concurrent queries, COPY IN,
//! simple queries and an error.
use futures_util::SinkExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tokio_postgres::Error> {
    let port = std::env::args().nth(1).expect("port");
    let (mut c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=app password=secret dbname=app application_name=capture"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    let st = c
        .prepare("SELECT name, balance::float8 FROM accounts WHERE tenant_id = $1")
        .await?;
    for t in [1i64, 2, 42] {
        c.query(&st, &[&t]).await?;
    }
    c.query(
        "SELECT name FROM accounts WHERE tenant_id = $1 AND name = $2",
        &[&7i64, &"acme"],
    )
    .await?;
    // Pipelined: both queries are on the wire before either answer.
    let (a, b) = tokio::join!(
        c.query(
            "SELECT count(*) FROM accounts WHERE tenant_id = $1",
            &[&3i64]
        ),
        c.query("SELECT $1::text || $2::text", &[&"a", &"b"]),
    );
    a?;
    b?;
    let tx = c.transaction().await?;
    tx.execute(
        "INSERT INTO accounts (tenant_id, name, balance) VALUES ($1, $2, 0)",
        &[&42i64, &"tokio"],
    )
    .await?;
    tx.commit().await?;
    let sink = c
        .copy_in("COPY accounts (tenant_id, name, balance) FROM STDIN")
        .await?;
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"8\ttokio-copy\t1\n"))
        .await?;
    sink.finish().await?;
    c.simple_query("BEGIN; SELECT * FROM accounts WHERE tenant_id = 8; COMMIT")
        .await?;
    let _ = c.simple_query("SELECT 1/0").await;
    Ok(())
}
