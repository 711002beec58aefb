#[test]
fn layer_bytes_sum_what_the_engine_reports() {
    let mut l = LayerBytes::default();
    assert_eq!(l.update("a", "Pulling fs layer", None, None), None);
    assert_eq!(
        l.update("a", "Downloading", Some(10), Some(100)),
        Some((10, 100))
    );
    assert_eq!(
        l.update("b", "Downloading", Some(5), Some(50)),
        Some((15, 150))
    );
    // Unchanged, and lines without a size, say nothing.
    assert_eq!(l.update("b", "Downloading", Some(5), Some(50)), None);
    assert_eq!(l.update("c", "Downloading", Some(5), None), None);
    assert_eq!(
        l.update("a", "Download complete", None, None),
        Some((105, 150))
    );
    assert_eq!(l.update("a", "Pull complete", None, None), None);
    // A layer never seen downloading (already present) adds nothing it cannot size.
    assert_eq!(l.update("d", "Already exists", None, None), None);
}

use super::*;

#[test]
fn bare_hex_parents_are_qualified_as_sha256() {
    assert_eq!(qualified_id("abc"), "sha256:abc");
    assert_eq!(qualified_id("sha256:abc"), "sha256:abc");
}

#[test]
fn credentials_go_to_the_engine_with_their_server() {
    let auth = RegistryAuth {
        server: "r.example:5000".into(),
        username: Some("u".into()),
        password: Some("p".into()),
        identity_token: None,
    };
    let c = to_docker_credentials(&auth);
    assert_eq!(c.serveraddress.as_deref(), Some("r.example:5000"));
    assert_eq!(
        (c.username.as_deref(), c.password.as_deref()),
        (Some("u"), Some("p"))
    );
}

#[test]
fn engine_answers_are_classified_and_transport_errors_name_the_engine() {
    let image: ImageRef = "r.example/app:1".parse().unwrap();
    let denied = BollardError::DockerResponseServerError {
        status_code: 401,
        message: "unauthorized: authentication required".into(),
    };
    let f = failure_from("unix:///x.sock", Some(&image), denied);
    assert_eq!(f.class, FailureClass::Auth);
    let f = failure_from("unix:///x.sock", None, BollardError::RequestTimeoutError);
    assert_eq!(f.class, FailureClass::Engine);
    assert_eq!(
        f.to_string(),
        "the Docker engine at unix:///x.sock did not answer in time"
    );
}

#[tokio::test]
async fn a_malformed_address_is_a_usage_error_and_a_missing_socket_is_worth_waiting_for() {
    let bad = DockerEngine::connect(Some("ftp://nowhere"))
        .await
        .err()
        .unwrap();
    assert!(matches!(bad, ConnectError::BadAddress(_)), "{bad:?}");
    let missing = DockerEngine::connect(Some("unix:///nonexistent/docker.sock"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(missing, ConnectError::Unreachable(_)),
        "{missing:?}"
    );
}

#[test]
fn an_engine_that_cannot_be_reached_is_said_in_the_os_words() {
    let missing = BollardError::SocketNotFoundError("/run/docker.sock".into());
    assert_eq!(innermost(&missing), "no socket at /run/docker.sock");
    let refused = BollardError::DockerResponseServerError {
        status_code: 404,
        message: "404 page not found\n".into(),
    };
    // One line, whatever the server's body ended with.
    assert!(
        !innermost(&refused).contains('\n'),
        "{}",
        innermost(&refused)
    );
}

/// The engine's clock against this host's, from `/info`'s `SystemTime`, to the second; zero
/// when it says nothing readable.
#[test]
fn the_engine_clock_is_measured_from_its_info() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T13:38:22.5Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(
        clock_ahead_of(Some("2026-12-07T13:38:22.170146595Z"), now),
        0
    );
    assert_eq!(clock_ahead_of(Some("2026-12-07T13:41:23.9Z"), now), 181);
    assert_eq!(clock_ahead_of(Some("2026-12-07T14:38:22.5+01:00"), now), 0);
    assert_eq!(clock_ahead_of(Some("2026-12-07T13:38:12.5Z"), now), -10);
    assert_eq!(clock_ahead_of(Some("yesterday"), now), 0);
    assert_eq!(clock_ahead_of(None, now), 0);
}
