//! Tests of the admin section's config errors: addresses, tokens and token files.

use super::tests_errors::{doc, error, errors};
use super::*;

#[test]
fn admin_errors() {
    assert_eq!(
        error(&["admin: {bind: '0.0.0.0:9120'}"]),
        "admin.bind: 0.0.0.0:9120 is not a loopback address and no admin.token or \
         admin.token_file is set: anyone who can reach it could start and cancel warming jobs; \
         set a token or bind to 127.0.0.1"
    );
    assert_eq!(
        error(&["admin: {bind: '[::]:9120'}"]),
        "admin.bind: [::]:9120 is not a loopback address and no admin.token or \
         admin.token_file is set: anyone who can reach it could start and cancel warming jobs; \
         set a token or bind to 127.0.0.1"
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', token: a-long-enough-token, token_file: /x}"]),
        "admin.token_file: set admin.token or admin.token_file, not both"
    );
    let missing = error(&["admin: {bind: '0.0.0.0:9120', token_file: /nonexistent/bifrost-token}"]);
    assert!(
        missing.starts_with(
            "admin.token_file: cannot read the token file '/nonexistent/bifrost-token': "
        ),
        "{missing}"
    );
    let empty = std::env::temp_dir().join(format!("bifrost-{}-empty-token", std::process::id()));
    std::fs::write(&empty, " \n").expect("write temp file");
    let e = error(&[&format!(
        "admin: {{bind: '127.0.0.1:9120', token_file: '{}'}}",
        empty.display()
    )]);
    let _ = std::fs::remove_file(&empty);
    assert_eq!(
        e,
        format!(
            "admin.token_file: the token file '{}' is empty",
            empty.display()
        )
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', token: ''}"]),
        "admin.token: the token must not be empty"
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', token: 'two words'}"]),
        "admin.token: the token must be printable ASCII without spaces (it is sent in an \
         Authorization header)"
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', token: 5}"]),
        "admin.token: expected a string, got an integer (5)"
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', max_connections: 0}"]),
        "admin.max_connections: must be at least 1, got 0"
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', request_timeout: 0s}"]),
        "admin.request_timeout: must be longer than zero"
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', header_timeout: 0s}"]),
        "admin.header_timeout: must be longer than zero"
    );
}

/// A file in the temp dir with `text`, and `mode`; removed on drop.
struct TokenFile(std::path::PathBuf);

impl TokenFile {
    fn new(name: &str, text: &[u8], mode: u32) -> TokenFile {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("bifrost-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        TokenFile(path)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The error of an admin section on `bind` whose token file is `path`.
fn token_file_error(bind: &str, path: &std::path::Path) -> String {
    error(&[&format!(
        "admin: {{bind: '{bind}', token_file: '{}'}}",
        path.display()
    )])
}

#[test]
fn admin_token_files_must_be_small_regular_files() {
    // A FIFO is refused before it is opened: start-up does not hang waiting for a writer.
    let fifo = std::env::temp_dir().join(format!("bifrost-{}-token-fifo", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let started = std::time::Instant::now();
    let e = token_file_error("127.0.0.1:9120", &fifo);
    let _ = std::fs::remove_file(&fifo);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        e,
        format!(
            "admin.token_file: the token file '{}' is a FIFO, not a regular file",
            fifo.display()
        )
    );
    // /dev/zero would be read until memory runs out.
    assert_eq!(
        token_file_error("127.0.0.1:9120", std::path::Path::new("/dev/zero")),
        "admin.token_file: the token file '/dev/zero' is a device or socket, not a regular file"
    );
    let dir = std::env::temp_dir();
    assert_eq!(
        token_file_error("127.0.0.1:9120", &dir),
        format!(
            "admin.token_file: the token file '{}' is a directory, not a regular file",
            dir.display()
        )
    );
    // 5 KB: not a token (only 4 KiB and one byte are read to find out).
    let big = TokenFile::new("token-5k", &[b'a'; 5000], 0o600);
    assert_eq!(
        token_file_error("127.0.0.1:9120", &big.0),
        format!(
            "admin.token_file: the token file '{}' is larger than 4096 bytes: it is not a token",
            big.0.display()
        )
    );
    // 4096 bytes of which the token is 20: accepted (the size limit is the file's).
    let mut padded = b"a-20-byte-long-token".to_vec();
    padded.resize(4096, b'\n');
    let at_limit = TokenFile::new("token-4k", &padded, 0o600);
    assert!(Config::parse(
        &doc(&[&format!(
            "admin: {{bind: '127.0.0.1:9120', token_file: '{}'}}",
            at_limit.0.display()
        )]),
        "my.yaml",
        Format::Yaml
    )
    .is_ok());
    let binary = TokenFile::new("token-binary", b"\xff\xfe-not-text-at-all-0123", 0o600);
    assert_eq!(
        token_file_error("127.0.0.1:9120", &binary.0),
        format!(
            "admin.token_file: the token (in '{}') must be printable ASCII without spaces",
            binary.0.display()
        )
    );
}

#[test]
fn admin_tokens_must_be_16_to_256_bytes() {
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:9120', token: 'short-token'}"]),
        "admin.token: the token is 11 bytes: it must be 16 to 256 bytes (a short token can be \
         guessed)"
    );
    let long = "x".repeat(257);
    assert_eq!(
        error(&[&format!("admin: {{bind: '0.0.0.0:9120', token: '{long}'}}")]),
        "admin.token: the token is 257 bytes: it must be 16 to 256 bytes (a short token can be \
         guessed)"
    );
    let short = TokenFile::new("token-short", b"abc\n", 0o600);
    assert_eq!(
        token_file_error("127.0.0.1:9120", &short.0),
        format!(
            "admin.token_file: the token (in '{}') is 3 bytes: it must be 16 to 256 bytes (a \
             short token can be guessed)",
            short.0.display()
        )
    );
}

#[test]
fn a_token_file_others_can_read_is_an_error_on_a_non_loopback_bind() {
    let open = TokenFile::new("token-0644", b"a-token-of-16-bytes-or-more\n", 0o644);
    assert_eq!(
        token_file_error("0.0.0.0:9120", &open.0),
        format!(
            "admin.token_file: the token file '{}' is readable by group or others (mode 0644): \
             whoever can read it can start and cancel warming jobs; chmod 600 it (required on \
             a non-loopback admin.bind)",
            open.0.display()
        )
    );
    let group = TokenFile::new("token-0640", b"a-token-of-16-bytes-or-more\n", 0o640);
    assert!(token_file_error("[::]:9120", &group.0).contains("(mode 0640)"));
    // Owner-only on the same bind is fine.
    let private = TokenFile::new("token-0600", b"a-token-of-16-bytes-or-more\n", 0o600);
    assert!(Config::parse(
        &doc(&[&format!(
            "admin: {{bind: '0.0.0.0:9120', token_file: '{}'}}",
            private.0.display()
        )]),
        "my.yaml",
        Format::Yaml
    )
    .is_ok());
}

#[test]
fn a_token_file_shared_through_the_processs_own_group_is_accepted() {
    // As a Kubernetes Secret volume with fsGroup and mode 0440 gives it: another user's file
    // (root's there) in this process's group. Here: this process's group, another owner.
    let gid = unsafe { libc::getegid() };
    let other = unsafe { libc::geteuid() }.wrapping_add(4242);
    let shared = TokenFile::new("token-0640-shared", b"a-token-of-16-bytes-or-more\n", 0o640);
    let c_path = std::ffi::CString::new(shared.0.as_os_str().as_encoded_bytes()).expect("path");
    let chowned = unsafe { libc::chown(c_path.as_ptr(), other, gid) };
    assert_eq!(
        chowned, 0,
        "chown needs root (CI and the dev machines run the suite as root)"
    );
    let admin = format!(
        "admin: {{bind: '0.0.0.0:9120', token_file: '{}'}}",
        shared.0.display()
    );
    assert!(Config::parse(&doc(&[&admin]), "my.yaml", Format::Yaml).is_ok());
    // Others must still not read it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shared.0, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(token_file_error("0.0.0.0:9120", &shared.0).contains("(mode 0644)"));
}

#[test]
fn admin_errors_are_reported_together() {
    assert_eq!(
        errors(&["admin: {bind: nowhere, token: 'a b', max_connections: -1, request_timeout: 5}"]),
        [
            "admin.bind: bad address 'nowhere': expected host:port",
            "admin.max_connections: expected a positive whole number, got an integer (-1)",
            "admin.request_timeout: '5' has no unit; expected a number with a unit, like 250ms, \
             1.5s, 10m (units: us, ms, s, m, h)",
            "admin.token: the token must be printable ASCII without spaces (it is sent in an \
             Authorization header)",
        ]
    );
    // A broken token is not also reported as a missing one.
    assert_eq!(
        error(&["admin: {bind: '0.0.0.0:1', token: ''}"]),
        "admin.token: the token must not be empty"
    );
}
