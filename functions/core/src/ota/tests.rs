//! Unit tests of `ota`.

use super::*;

fn v(text: &str) -> FirmwareVersion {
    FirmwareVersion::parse(text).unwrap()
}

fn range(text: &str) -> VersionRange {
    VersionRange::parse(text).unwrap()
}

fn device(n: usize) -> DeviceId {
    DeviceId::parse(&format!("sn-{n:05}")).unwrap()
}

#[test]
fn versions_are_strict_semver() {
    for good in [
        "0.0.0",
        "1.2.3",
        "1.2.3-rc.1",
        "1.2.3+build.7",
        "1.2.3-alpha.1+sha.5114f85",
    ] {
        assert_eq!(v(good).to_string(), good);
    }
    for bad in [
        "",
        "1",
        "1.2",
        "v1.2.3",
        " 1.2.3",
        "1.2.3 ",
        "01.2.3",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-rc..1",
        "a.b.c",
    ] {
        assert!(FirmwareVersion::parse(bad).is_err(), "{bad:?}");
    }
    let long = format!("1.2.3-{}", "a".repeat(200));
    assert!(FirmwareVersion::parse(&long).is_err());
}

#[test]
fn pre_releases_sort_before_their_release() {
    assert!(v("1.2.0").is_upgrade_from(&v("1.2.0-rc.1")));
    assert!(v("1.2.0-rc.2").is_upgrade_from(&v("1.2.0-rc.1")));
    assert!(v("1.2.0-rc.10").is_upgrade_from(&v("1.2.0-rc.9")));
    assert!(v("1.2.0-beta").is_upgrade_from(&v("1.2.0-alpha.9")));
    assert!(!v("1.2.0-rc.1").is_upgrade_from(&v("1.2.0")));
    assert!(v("1.2.0-rc.1").is_upgrade_from(&v("1.1.9")));
}

#[test]
fn build_metadata_never_makes_an_upgrade_or_a_new_release() {
    assert!(!v("1.2.0+b2").is_upgrade_from(&v("1.2.0+b1")));
    assert!(!v("1.2.0+b1").is_upgrade_from(&v("1.2.0+b2")));
    assert!(!v("1.2.0").is_upgrade_from(&v("1.2.0+b1")));
    assert_eq!(v("1.2.0+b1").release(), v("1.2.0+b2").release());
    assert_eq!(v("1.2.0-rc.1+b1").release(), "1.2.0-rc.1");
    assert_ne!(v("1.2.0-rc.1").release(), v("1.2.0").release());
    assert!(range("=1.2.0").matches(&v("1.2.0+anything")));
}

#[test]
fn never_a_downgrade_nor_the_same_release() {
    assert!(!v("1.3.1").is_upgrade_from(&v("1.3.2")));
    assert!(!v("1.3.2").is_upgrade_from(&v("1.3.2")));
    assert!(v("1.3.10").is_upgrade_from(&v("1.3.9")));
    assert!(v("2.0.0").is_upgrade_from(&v("1.99.99")));
    let any = range("*");
    assert!(!is_offerable(&any, &v("1.4.0"), &v("1.3.0")));
    assert!(is_offerable(&any, &v("1.2.0"), &v("1.3.0")));
}

#[test]
fn ranges_select_current_versions() {
    let r = range(">=1.2.0, <1.4.0");
    assert!(r.matches(&v("1.2.0")));
    assert!(r.matches(&v("1.3.9")));
    assert!(!r.matches(&v("1.4.0")));
    assert!(!r.matches(&v("1.1.9")));
    assert!(range("^1.3").matches(&v("1.9.0")));
    assert!(!range("^1.3").matches(&v("2.0.0")));
    assert!(range("~1.3").matches(&v("1.3.7")));
    assert!(!range("~1.3").matches(&v("1.4.0")));
    for bad in ["", "  ", ">>1", "1.2.3.4", "banana", ">=1.2.0 <1.4.0 ||"] {
        assert!(VersionRange::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn pre_releases_match_only_ranges_that_name_one() {
    // A device on a beta is not swept into a release rollout...
    assert!(!range(">=1.2.0, <1.4.0").matches(&v("1.3.0-beta.2")));
    assert!(!range("*").matches(&v("1.3.0-beta.2")));
    // ...unless the range asks for pre-releases of that version.
    assert!(range(">=1.3.0-beta.1, <1.4.0").matches(&v("1.3.0-beta.2")));
    assert!(!range(">=1.3.0-beta.1, <1.4.0").matches(&v("1.3.1-beta.1")));
    assert!(range(">=1.3.0-beta.1, <1.4.0").matches(&v("1.3.1")));
}

fn url(text: &str) -> FirmwareUrl {
    FirmwareUrl::parse(text).unwrap()
}

fn destination(text: &str, allowed: &PrivateDestinations) -> Result<(), DestinationError> {
    check_destination(&url(text), allowed)
}

#[test]
fn the_host_of_a_url() {
    assert_eq!(url("https://cdn.example.com/a").host(), "cdn.example.com");
    assert_eq!(
        url("https://cdn.example.com:8443?x#y").host(),
        "cdn.example.com"
    );
    assert_eq!(url("https://[::1]:443/a").host(), "[::1]");
    assert_eq!(url("https://10.0.0.1").host(), "10.0.0.1");
}

#[test]
fn public_destinations_are_fine() {
    let none = PrivateDestinations::NONE;
    for good in [
        "https://cdn.example.com/fw.bin",
        "https://CDN.Example.COM./fw.bin",
        "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab",
        "https://x.example/a.bin",
        "https://my_bucket.example.com/a",
        "https://1e100.net/a",
        "https://8.8.8.8/fw.bin",
        "https://[2606:4700::1111]:8443/fw.bin",
        "https://[::ffff:8.8.8.8]/fw.bin",
        "https://notlocalhost.example/a",
        "https://local.example/a",
        "https://internal.example.com/a",
    ] {
        assert_eq!(destination(good, &none), Ok(()), "{good}");
    }
}

#[test]
fn loopback_private_and_link_local_destinations_are_refused() {
    let none = PrivateDestinations::NONE;
    for (bad, range) in [
        ("https://127.0.0.1/fw.bin", "127.0.0.0/8"),
        ("https://127.0.0.1:8443/fw.bin", "127.0.0.0/8"),
        ("https://[::1]/fw.bin", "::1/128"),
        ("https://[::]/fw.bin", "::/128"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.0.0/16",
        ),
        ("https://10.0.0.1/fw.bin", "10.0.0.0/8"),
        ("https://172.20.1.1/fw.bin", "172.16.0.0/12"),
        ("https://192.168.1.1/fw.bin", "192.168.0.0/16"),
        ("https://100.100.100.200/fw.bin", "100.64.0.0/10"),
        ("https://0.0.0.0/fw.bin", "0.0.0.0/8"),
        ("https://[::ffff:127.0.0.1]/fw.bin", "127.0.0.0/8"),
        ("https://[::ffff:7f00:1]/fw.bin", "127.0.0.0/8"),
        ("https://[::ffff:a9fe:a9fe]/fw.bin", "169.254.0.0/16"),
        ("https://[fe80::1]/fw.bin", "fe80::/10"),
        ("https://[fd00:ec2::254]/fw.bin", "fc00::/7"),
        ("https://[64:ff9b::a00:1]/fw.bin", "10.0.0.0/8"),
        ("https://224.0.0.1/fw.bin", "224.0.0.0/4"),
        ("https://255.255.255.255/fw.bin", "240.0.0.0/4"),
    ] {
        match destination(bad, &none) {
            Err(DestinationError::Address(special)) => {
                assert_eq!(special.range, range, "{bad}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let error = destination("https://127.0.0.1/", &none).unwrap_err();
    assert_eq!(
        error.to_string(),
        "must not point at a loopback address (127.0.0.0/8): devices would fetch it inside their own network"
    );
    assert!(error.is_allowable());
}

#[test]
fn other_spellings_of_ipv4_addresses_are_refused_always() {
    let everything = PrivateDestinations::parse("0.0.0.0/0,::/0").unwrap();
    for bad in [
        "https://2130706433/fw.bin",
        "https://0x7f000001/fw.bin",
        "https://0X7F000001/fw.bin",
        "https://0177.0.0.1/fw.bin",
        "https://127.1/fw.bin",
        "https://127.0.1/fw.bin",
        "https://0x7f.0.0.1/fw.bin",
        "https://127.0.0.01/fw.bin",
        "https://127.0.0.1./fw.bin",
        "https://1.2.3.4.5/fw.bin",
        "https://example.0x1/fw.bin",
        "https://example.123/fw.bin",
        "https://0x/fw.bin",
    ] {
        for allowed in [&PrivateDestinations::NONE, &everything] {
            let error = destination(bad, allowed).unwrap_err();
            assert_eq!(error, DestinationError::IpSpelling, "{bad}");
            assert!(!error.is_allowable());
        }
    }
    for bad in [
        "https://%31%32%37.0.0.1/fw.bin",
        "https://localhost%2e/fw.bin",
        "https://exa!mple.com/fw.bin",
        "https://a..b/fw.bin",
        "https://.example.com/fw.bin",
        "https://example.com../fw.bin",
    ] {
        let error = destination(bad, &everything).unwrap_err();
        assert_eq!(error, DestinationError::HostName, "{bad}");
    }
}

#[test]
fn local_names_are_refused() {
    let none = PrivateDestinations::NONE;
    for bad in [
        "https://localhost/fw.bin",
        "https://LOCALHOST:8443/fw.bin",
        "https://localhost./fw.bin",
        "https://fw.localhost/fw.bin",
        "https://printer.local/fw.bin",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://nas.home.arpa/fw.bin",
        "https://localhost.localdomain/fw.bin",
        "https://fw.lan/fw.bin",
        "https://fw.corp/fw.bin",
    ] {
        assert!(
            matches!(destination(bad, &none), Err(DestinationError::LocalName(_))),
            "{bad}"
        );
    }
    assert_eq!(
        destination("https://fileserver/fw.bin", &none),
        Err(DestinationError::SingleLabel)
    );
    let error = destination("https://fw.local/", &none).unwrap_err();
    assert!(error.to_string().contains("`.local`"), "{error}");
}

#[test]
fn an_operator_allows_private_destinations() {
    let allowed = PrivateDestinations::parse(
        " 10.0.0.0/8, 192.168.1.7 ,fd00::/8,fw-cache, fw.plant.example,.plant.internal,",
    )
    .unwrap();
    for good in [
        "https://10.1.2.3/fw.bin",
        "https://[::ffff:10.1.2.3]/fw.bin",
        "https://192.168.1.7/fw.bin",
        "https://[fd12::1]/fw.bin",
        "https://fw-cache/fw.bin",
        "https://FW-CACHE./fw.bin",
        "https://fw.plant.example/fw.bin",
        "https://a.b.plant.internal/fw.bin",
    ] {
        assert_eq!(destination(good, &allowed), Ok(()), "{good}");
    }
    for bad in [
        "https://192.168.1.8/fw.bin",
        "https://127.0.0.1/fw.bin",
        "https://[fe80::1]/fw.bin",
        "https://other-cache/fw.bin",
        "https://plant.internal/fw.bin",
        "https://x.other.internal/fw.bin",
        "https://localhost/fw.bin",
    ] {
        assert!(destination(bad, &allowed).is_err(), "{bad}");
    }
    assert!(PrivateDestinations::parse("").unwrap().is_empty());
    assert!(PrivateDestinations::parse(" , ").unwrap().is_empty());
    for (bad, index) in [
        ("10.0.0.0/33", 1),
        ("10.0.0.0/8,10.0.0.1/8", 2),
        ("10.0.0.0/8;192.168.0.0/16", 1),
        ("0x7f000001", 1),
        ("127.1", 1),
        ("a,b c", 2),
        (".", 1),
        (".x..y", 1),
        ("fw/cache", 1),
    ] {
        let error = PrivateDestinations::parse(bad).unwrap_err();
        assert_eq!(error.index, index, "{bad}: {error}");
        assert!(
            error.to_string().starts_with(&format!("entry {index} ")),
            "{error}"
        );
    }
}

#[test]
fn firmware_fields_are_checked() {
    for good in [
        "https://cdn.example.com/fw/t1000-1.4.0.bin",
        "https://cdn.example.com",
        "https://cdn.example.com:8443/fw/a%20b.bin?sig=abc%2F&expires=1#part",
        "https://[2001:db8::1]/fw.bin",
        "https://[2001:db8::1]:443",
        "https://[::ffff:192.0.2.7]/fw.bin",
        "https://192.0.2.7/fw.bin",
        "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab&X-Amz-Date=20261206T000000Z",
        "https://host/a:b@c/(x)!$&'*+,;=~",
    ] {
        assert!(FirmwareUrl::parse(good).is_ok(), "{good:?}");
    }
    let long = format!("https://x.example/{}", "a".repeat(FirmwareUrl::MAX_LEN));
    for bad in [
        "",
        "https://",
        "https:///fw.bin",
        "https://:443/fw.bin",
        "http://cdn.example.com/x",
        "HTTPS://cdn.example.com/x",
        "https://a b",
        "ftp://x",
        "https://é",
        "https://cdn.example.com/é.bin",
        // User info: credentials would go to every device.
        "https://user:secret@cdn.example.com/fw.bin",
        "https://user@cdn.example.com/fw.bin",
        // Not URI characters, or a broken escape.
        "https://cdn.example.com/a\"b",
        "https://cdn.example.com/a\\b",
        "https://cdn.example.com/a|b",
        "https://cdn.example.com/a^b",
        "https://cdn.example.com/a<b>",
        "https://cdn.example.com/a{b}",
        "https://cdn.example.com/a`b",
        "https://cdn.example.com/a[0]",
        "https://cdn.example.com/a%2",
        "https://cdn.example.com/a%zz",
        "https://cdn.example.com/a#b#c",
        // Hosts and ports.
        "https://[2001:db8::1/fw.bin",
        "https://[]/fw.bin",
        "https://[2001:db8::1]x/fw.bin",
        "https://[fe80::1%25eth0]/fw.bin",
        "https://[E10F3F:7E91CD3b:]/fw.bin",
        "https://[192.0.2.7]/fw.bin",
        "https://[v1.fe80::1]/fw.bin",
        "https://cdn.example.com:/fw.bin",
        "https://cdn.example.com:0/fw.bin",
        "https://cdn.example.com:65536/fw.bin",
        "https://cdn.example.com:44a/fw.bin",
        "https://cdn.example.com:443:443/fw.bin",
        "https://e@fG\"G0|kC@00\\NGIL(>\\[^5c0=g8%^kv",
        long.as_str(),
    ] {
        assert!(FirmwareUrl::parse(bad).is_err(), "{bad:?}");
    }
    assert!(Sha256Hex::parse(&"ab".repeat(32)).is_ok());
    for bad in [
        "".to_owned(),
        "AB".repeat(32),
        "ab".repeat(31),
        "zz".repeat(32),
        "ab".repeat(33),
    ] {
        assert!(Sha256Hex::parse(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn stages_are_increasing_percentages() {
    assert_eq!(
        Stages::new(&[1, 10, 50, 100]).unwrap().as_slice(),
        &[1, 10, 50, 100]
    );
    assert!(Stages::new(&[100]).is_ok());
    assert!(Stages::new(&[5, 20]).is_ok());
    let bad_plans: [&[u32]; 6] = [&[], &[0, 10], &[10, 10], &[50, 10], &[1, 101], &[300]];
    for bad in bad_plans {
        assert!(Stages::new(bad).is_err(), "{bad:?}");
    }
    assert!(Stages::new(&(1..=21).collect::<Vec<_>>()).is_err());
    let stages = Stages::new(&[1, 10, 100]).unwrap();
    assert_eq!(stages.percent(1), 10);
    assert_eq!(stages.percent(9), 100);
    assert!(!stages.is_last(1));
    assert!(stages.is_last(2));
}

#[test]
fn cohorts_are_deterministic_and_stable() {
    let d = device(7);
    assert_eq!(cohort_bucket("ro_1", &d), cohort_bucket("ro_1", &d));
    assert!(cohort_bucket("ro_1", &d) < BUCKETS);
    // The rollout id reshuffles: not every rollout hits the same devices first.
    let same = (0..1000)
        .filter(|&n| cohort_bucket("ro_1", &device(n)) == cohort_bucket("ro_2", &device(n)))
        .count();
    assert!(same < 10, "{same}");
    assert!(in_cohort("ro_1", &d, 100));
}

#[test]
fn a_later_stage_keeps_every_device_of_the_earlier_ones() {
    let stages = [1u8, 5, 10, 25, 50, 75, 100];
    for n in 0..5000 {
        let d = device(n);
        let mut was_in = false;
        for &p in &stages {
            let is_in = in_cohort("ro_abc", &d, p);
            assert!(!was_in || is_in, "device {n} left the cohort at {p}%");
            was_in = is_in;
        }
        assert!(was_in, "100% takes every device");
    }
}

#[test]
fn one_percent_of_10000_devices_is_within_statistical_bounds() {
    // Binomial(10 000, 0.01): mean 100, standard deviation 9.95; four standard
    // deviations either side is [60, 140].
    for rollout in ["ro_0001", "ro_ffff", "ro_5f2c9a", "another-rollout"] {
        let count = (0..10_000)
            .filter(|&n| in_cohort(rollout, &device(n), 1))
            .count();
        assert!((60..=140).contains(&count), "{rollout}: {count}");
    }
    // And the other stages of the usual plan.
    for (p, lo, hi) in [(10u8, 880, 1120), (50, 4800, 5200)] {
        let count = (0..10_000)
            .filter(|&n| in_cohort("ro_0001", &device(n), p))
            .count();
        assert!((lo..=hi).contains(&count), "{p}%: {count}");
    }
}

fn tally(installed: u64, failed: u64, timed_out: u64) -> Tally {
    Tally {
        installed,
        failed,
        timed_out,
        ..Tally::default()
    }
}

#[test]
fn halts_at_exactly_the_threshold_and_not_before_min_reports() {
    let rule = HaltRule::new(0.5, 4).unwrap();
    // Every report a failure, but fewer than min_reports: no halt yet.
    assert!(!rule.should_halt(&tally(0, 3, 0)));
    // 2 of 4: exactly 0.5.
    assert!(rule.should_halt(&tally(2, 2, 0)));
    // 1 of 4: under.
    assert!(!rule.should_halt(&tally(3, 1, 0)));
    // Fractions that are not exact in binary still compare exactly.
    let rule = HaltRule::new(0.3, 10).unwrap();
    assert!(rule.should_halt(&tally(7, 3, 0)));
    assert!(!rule.should_halt(&tally(8, 2, 0)));
    let rule = HaltRule::new(0.1, 10).unwrap();
    assert!(rule.should_halt(&tally(9, 1, 0)));
    assert!(!rule.should_halt(&tally(19, 1, 0)));
    assert!(rule.should_halt(&tally(18, 2, 0)));
}

#[test]
fn a_timeout_counts_as_a_failure() {
    let rule = HaltRule::new(0.5, 2).unwrap();
    assert!(!rule.should_halt(&tally(1, 0, 0)));
    assert!(rule.should_halt(&tally(1, 0, 1)));
    assert_eq!(tally(1, 1, 2).failures(), 3);
    assert_eq!(tally(1, 1, 2).failure_rate(), 0.75);
    // Devices still in progress are not outcomes.
    let t = Tally {
        offered: 5,
        downloading: 3,
        installing: 2,
        ..tally(1, 0, 1)
    };
    assert_eq!(t.outcomes(), 2);
    assert_eq!(t.total(), 12);
}

#[test]
fn thresholds_are_fractions() {
    assert_eq!(threshold_ppm(1.0), Ok(1_000_000));
    assert_eq!(threshold_ppm(0.05), Ok(50_000));
    for bad in [0.0, -0.1, 1.0001, f64::NAN, f64::INFINITY, 1e-9] {
        assert!(threshold_ppm(bad).is_err(), "{bad}");
    }
    assert_eq!(HaltRule::new(0.25, 0).unwrap().min_reports, 1);
}

#[test]
fn transitions_go_forward_and_stop_after_installed() {
    use DeviceProgress as P;
    use ReportStatus as R;
    assert_eq!(
        transition(P::Offered, R::Downloading),
        Ok(Transition::Moved(P::Downloading))
    );
    assert_eq!(
        transition(P::Offered, R::Installed),
        Ok(Transition::Moved(P::Installed))
    );
    assert_eq!(
        transition(P::Downloading, R::Installing),
        Ok(Transition::Moved(P::Installing))
    );
    assert_eq!(
        transition(P::Installing, R::Failed),
        Ok(Transition::Moved(P::Failed))
    );
    assert_eq!(
        transition(P::Offered, R::Failed),
        Ok(Transition::Moved(P::Failed))
    );
    assert_eq!(
        transition(P::Installing, R::Installing),
        Ok(Transition::Repeated)
    );
    assert_eq!(
        transition(P::Installed, R::Installed),
        Ok(Transition::Repeated)
    );
    for (from, to) in [
        (P::Installed, R::Failed),
        (P::Installed, R::Downloading),
        (P::Failed, R::Installed),
        (P::Failed, R::Downloading),
        (P::Installing, R::Downloading),
    ] {
        assert!(transition(from, to).is_err(), "{from:?} -> {to:?}");
    }
}

fn position(state: RolloutState, stage: usize) -> RolloutPosition {
    RolloutPosition { state, stage }
}

#[test]
fn actions_follow_the_lifecycle() {
    use RolloutAction as A;
    use RolloutState as S;
    let stages = Stages::new(&[1, 10, 100]).unwrap();
    let rule = HaltRule::new(0.2, 2).unwrap();
    let healthy = tally(5, 0, 0);
    let go = |action, state, stage, t: &Tally| {
        apply_action(action, position(state, stage), &stages, &rule, t)
    };
    assert_eq!(
        go(A::Advance, S::Active, 0, &healthy),
        Ok(position(S::Active, 1))
    );
    assert_eq!(
        go(A::Advance, S::Active, 2, &healthy),
        Err(ActionRefused::LastStage)
    );
    assert!(go(A::Advance, S::Paused, 0, &healthy).is_err());
    assert!(go(A::Advance, S::Halted, 0, &healthy).is_err());
    assert!(matches!(
        go(A::Advance, S::Active, 0, &tally(4, 1, 0)),
        Err(ActionRefused::Unhealthy(_))
    ));
    // One outcome of the two needed, with more devices still installing.
    let waiting = Tally {
        installing: 5,
        ..tally(1, 0, 0)
    };
    assert!(matches!(
        go(A::Advance, S::Active, 0, &waiting),
        Err(ActionRefused::Unhealthy(_))
    ));
    // Nobody offered yet: nothing to wait for.
    assert!(go(A::Advance, S::Active, 0, &Tally::default()).is_ok());
    // The only device offered is in: enough evidence when fewer than min_reports exist.
    assert!(go(A::Advance, S::Active, 0, &tally(1, 0, 0)).is_ok());
    assert_eq!(
        go(A::Pause, S::Active, 1, &healthy),
        Ok(position(S::Paused, 1))
    );
    assert!(go(A::Pause, S::Paused, 1, &healthy).is_err());
    assert_eq!(
        go(A::Resume, S::Paused, 1, &healthy),
        Ok(position(S::Active, 1))
    );
    assert!(go(A::Resume, S::Halted, 1, &healthy).is_err());
    assert!(go(A::Resume, S::Active, 1, &healthy).is_err());
    assert_eq!(
        go(A::Abort, S::Halted, 1, &healthy),
        Ok(position(S::Aborted, 1))
    );
    assert_eq!(
        go(A::Abort, S::Aborted, 1, &healthy),
        Err(ActionRefused::AlreadyAborted)
    );
}

fn manifest() -> Manifest {
    Manifest {
        model: Model::parse("t1000").unwrap(),
        rollout_id: "ro_0123456789abcdef".to_owned(),
        sha256: "ab".repeat(32),
        size: 1_048_576,
        url: "https://cdn.example.com/t1000/1.4.0.bin".to_owned(),
        version: "1.4.0".to_owned(),
    }
}

#[test]
fn canonical_bytes_are_sorted_compact_json() {
    let expected = format!(
        r#"{{"model":"t1000","rollout_id":"ro_0123456789abcdef","sha256":"{}","size":1048576,"url":"https://cdn.example.com/t1000/1.4.0.bin","version":"1.4.0"}}"#,
        "ab".repeat(32)
    );
    assert_eq!(
        String::from_utf8(manifest().canonical_bytes()).unwrap(),
        expected
    );
    // Sorted members: what any JCS implementation would produce from the object.
    let value: serde_json::Value = serde_json::from_slice(&manifest().canonical_bytes()).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

#[test]
fn the_image_must_match_size_and_digest() {
    let m = Manifest {
        sha256: hex_digest(b"firmware"),
        size: 8,
        ..manifest()
    };
    m.verify_image(b"firmware").unwrap();
    // The digest may be written in capitals.
    Manifest {
        sha256: m.sha256.to_uppercase(),
        ..m.clone()
    }
    .verify_image(b"firmware")
    .unwrap();
    assert_eq!(
        m.verify_image(b"firmwar"),
        Err(ImageMismatch::Size {
            expected: 8,
            got: 7
        })
    );
    assert!(matches!(
        m.verify_image(b"firmwarE"),
        Err(ImageMismatch::Digest { .. })
    ));
}

#[test]
fn a_signed_manifest_is_what_the_device_library_reads() {
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode([&PKCS8_ED25519_PREFIX[..], &[7; 32][..]].concat())
    );
    let signer = ManifestSigner::from_pem(&pem).unwrap();
    let signed = signer.signed(manifest());
    let json = serde_json::to_value(&signed).unwrap();
    let mut members: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(
        members,
        ["key_id", "manifest", "signature", "signature_algorithm"]
    );
    assert_eq!(json["signature_algorithm"], "Ed25519");
    let back: SignedManifest = serde_json::from_value(json).unwrap();
    assert_eq!(back, signed);
    assert_eq!(back.key_id, hex_digest(&pair.pk.to_der()));
    let verifier = ManifestVerifier::from_pem(&pair.pk.to_pem()).unwrap();
    assert!(verifier.verify(&back.manifest.canonical_bytes(), &back.signature));
}

#[test]
fn signatures_verify_with_the_published_key_and_fail_when_one_byte_changes() {
    let signer = ManifestSigner::from_pem(TEST_KEY).unwrap();
    let verifier = ManifestVerifier::from_pem(&signer.public_key_pem()).unwrap();
    let bytes = manifest().canonical_bytes();
    let signature = signer.sign(&manifest());
    assert!(verifier.verify(&bytes, &signature));
    for i in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[i] ^= 0x01;
        assert!(!verifier.verify(&changed, &signature), "byte {i}");
    }
    let mut raw = STANDARD.decode(&signature).unwrap();
    raw[0] ^= 0x80;
    assert!(!verifier.verify(&bytes, &STANDARD.encode(raw)));
    assert!(!verifier.verify(&bytes, "not base64!"));
    assert!(!verifier.verify(&bytes, ""));
    assert_eq!(signer.key_id().len(), 64);
    assert!(!format!("{signer:?}").contains("PRIVATE"));
}

#[test]
fn the_signer_agrees_with_an_independent_implementation() {
    // ed25519-compact parses the same PEM on its own: the same public key, key id
    // and (Ed25519 being deterministic) the same signature bytes.
    let signer = ManifestSigner::from_pem(TEST_KEY).unwrap();
    let other = ed25519_compact::KeyPair::from_pem(TEST_KEY).unwrap();
    assert_eq!(signer.public_key_pem().trim(), other.pk.to_pem().trim());
    assert_eq!(signer.key_id(), hex_digest(&other.pk.to_der()));
    let bytes = manifest().canonical_bytes();
    assert_eq!(
        STANDARD.decode(signer.sign_bytes(&bytes)).unwrap(),
        other.sk.sign(&bytes, None).to_vec()
    );
    // The PEM as openssl writes it, with CRLF line ends, is the same key.
    let crlf = TEST_KEY.replace('\n', "\r\n");
    assert_eq!(
        ManifestSigner::from_pem(&crlf).unwrap().key_id(),
        signer.key_id()
    );
}

#[test]
fn unusable_keys_are_refused() {
    assert!(ManifestSigner::from_pem("").is_err());
    assert!(
        ManifestSigner::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .is_err()
    );
    let signer = ManifestSigner::from_pem(TEST_KEY).unwrap();
    assert!(ManifestSigner::from_pem(&signer.public_key_pem()).is_err());
    // A well-formed PEM around something that is not an Ed25519 PKCS#8 key.
    let not_ed25519 = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode([0u8; 48])
    );
    assert!(ManifestSigner::from_pem(&not_ed25519).is_err());
    assert!(ManifestVerifier::from_pem(TEST_KEY).is_err());
}
