//! Showing an endpoint URL without the secrets it may carry: a password in the userinfo, or an
//! API key in the path or query (`https://eth-mainnet.example/v2/<key>`), which hosted RPC
//! providers commonly use. One rule for every URL anchormq prints (RPC, broker).

/// `scheme://host:port` with any userinfo shown as `***@` and any path or query as `/***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // not a URL: show nothing of it that could be a secret
        return "<not a URL>".to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    // the last '@' ends the userinfo (a password may itself contain '@')
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, authority),
    };
    let mut shown = format!("{scheme}://");
    if userinfo {
        shown.push_str("***@");
    }
    shown.push_str(host);
    if !tail.is_empty() && tail != "/" {
        shown.push_str("/***");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn secrets_in_userinfo_path_and_query_are_hidden() {
        for (url, shown) in [
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
            ("ws://127.0.0.1:8545/", "ws://127.0.0.1:8545"),
            ("mqtts://user:p@ss@broker:8883", "mqtts://***@broker:8883"),
            (
                "https://eth-mainnet.example/v2/SECRETKEY",
                "https://eth-mainnet.example/***",
            ),
            (
                "https://rpc.example/?apikey=SECRET",
                "https://rpc.example/***",
            ),
            (
                "wss://u:pw@rpc.example:443/ws/KEY",
                "wss://***@rpc.example:443/***",
            ),
            ("SECRET", "<not a URL>"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            for secret in ["SECRET", "p@ss", "pw"] {
                assert!(!redact_url(url).contains(secret), "{url}");
            }
        }
    }
}
