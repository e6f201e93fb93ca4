//! `rediss://` against a real TLS `redis-server`, its certificate signed by a CA made for the
//! test and trusted the way an operator trusts a private CA: through the OS certificate store,
//! here `SSL_CERT_FILE` (which rustls-native-certs reads instead of the system bundle).

use std::time::Duration;

use redislink::{open, Target};

#[tokio::test]
async fn rediss_talks_to_a_tls_redis_trusting_the_configured_ca() {
    let dir = std::env::temp_dir().join(format!("redislink-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = mockdsp::TestCa::generate().unwrap();
    let (ca_file, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    ca.write_ca(&ca_file).unwrap();
    std::fs::write(&cert, ca.cert_pem()).unwrap();
    std::fs::write(&key, ca.key_pem()).unwrap();
    // The only test of this binary: nothing else reads the environment meanwhile.
    std::env::set_var("SSL_CERT_FILE", &ca_file);

    let tls_port = testkit::free_port().unwrap().to_string();
    let (ca_s, cert_s, key_s) = (
        ca_file.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let _server = testkit::RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert_s,
        "--tls-key-file",
        key_s,
        "--tls-ca-cert-file",
        ca_s,
        "--tls-auth-clients",
        "no",
    ])
    .unwrap();
    let target = Target::Single(format!("rediss://127.0.0.1:{tls_port}/"));
    assert!(target.is_tls());
    let conn = open(&target, Duration::from_secs(2)).unwrap();
    conn.ping(Duration::from_secs(2)).await.unwrap();
    let set = redis::cmd("SET").arg("k").arg("over tls").clone();
    conn.query::<()>(&set, Duration::from_secs(2))
        .await
        .unwrap();
    let got: String = conn
        .query(redis::cmd("GET").arg("k"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(got, "over tls");

    // Plain TCP to the TLS port gets no answer it can use, within the timeout.
    let plain = open(
        &Target::Single(format!("redis://127.0.0.1:{tls_port}/")),
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(plain.ping(Duration::from_millis(300)).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
