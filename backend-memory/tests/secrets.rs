//! `memory://` URLs carry no credentials, but one given anyway never shows
//! in an error.

use std::error::Error as _;

#[tokio::test]
async fn invalid_urls_hide_a_password() {
    for url in [
        "memory://u:s3cr3t-pw@/tmp/x?save_interval_ms=never",
        "memory://u:s3cr3t-pw@host/x",
        "memory://:s3cr3t-pw@/x?unknown=1",
    ] {
        let e = resq_memory::connect(url).await.unwrap_err();
        let mut text = format!("{e}\n{e:?}");
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!("\n{s}\n{s:?}"));
            source = s.source();
        }
        assert!(!text.contains("s3cr3t-pw"), "{url}: {text}");
    }
}
