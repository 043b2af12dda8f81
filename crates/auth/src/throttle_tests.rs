use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::*;

fn cfg() -> ThrottleConfig {
    ThrottleConfig {
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(16),
        half_life: Duration::from_secs(60),
        max_tracked: 1000,
    }
}

const IP1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const IP2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

#[test]
fn delay_grows_exponentially_to_the_cap() {
    let t = Throttle::new(cfg());
    let now = Instant::now();
    assert_eq!(t.delay_before_reply(IP1, Some("bob"), now), Duration::ZERO);
    let delays: Vec<u64> = (0..8)
        .map(|_| t.record_failure(IP1, Some("bob"), now).as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 16, 16, 16]);
}

#[test]
fn scores_decay_over_time() {
    let t = Throttle::new(cfg());
    let now = Instant::now();
    for _ in 0..4 {
        t.record_failure(IP1, Some("bob"), now);
    }
    assert_eq!(t.delay_before_reply(IP1, None, now), Duration::from_secs(8));
    // One half-life later the score is 2: delay 2 s.
    let later = now + Duration::from_secs(60);
    assert_eq!(t.delay_before_reply(IP1, None, later).as_millis(), 2000);
    // Much later everything is forgotten.
    let much_later = now + Duration::from_secs(3600);
    assert_eq!(
        t.delay_before_reply(IP1, Some("bob"), much_later),
        Duration::ZERO
    );
    // And the entries are pruned as other failures come in.
    t.record_failure(IP2, None, much_later);
    assert_eq!(t.tracked(), (1, 0));
}

#[test]
fn per_user_penalty_follows_the_user_across_ips() {
    let t = Throttle::new(cfg());
    let now = Instant::now();
    // A botnet: one failure per IP, all against "bob".
    for i in 0..5u8 {
        t.record_failure(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)), Some("bob"), now);
    }
    let fresh_ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    assert_eq!(
        t.delay_before_reply(fresh_ip, Some("bob"), now),
        Duration::from_secs(16)
    );
    assert_eq!(
        t.delay_before_reply(fresh_ip, Some("BOB"), now),
        Duration::from_secs(16),
        "case variants share"
    );
    assert_eq!(
        t.delay_before_reply(fresh_ip, Some("alice"), now),
        Duration::ZERO
    );
}

#[test]
fn success_clears_the_user_but_not_the_ip() {
    let t = Throttle::new(cfg());
    let now = Instant::now();
    for _ in 0..3 {
        t.record_failure(IP1, Some("bob"), now);
    }
    t.record_success(IP2, "bob", now);
    assert_eq!(t.delay_before_reply(IP2, Some("bob"), now), Duration::ZERO);
    assert_eq!(
        t.delay_before_reply(IP1, Some("carol"), now),
        Duration::from_secs(4)
    );
}

#[test]
fn unknown_and_known_users_are_counted_alike() {
    let t = Throttle::new(cfg());
    let now = Instant::now();
    let a = t.record_failure(IP1, Some("exists"), now);
    let b = t.record_failure(IP2, Some("ghost"), now);
    assert_eq!(a, b);
}

#[test]
fn ipv6_is_tracked_per_64_and_mapped_v4_as_v4() {
    let t = Throttle::new(cfg());
    let now = Instant::now();
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    t.record_failure(a, None, now);
    assert_eq!(
        t.record_failure(b, None, now),
        Duration::from_secs(2),
        "same /64"
    );
    assert_eq!(t.delay_before_reply(c, None, now), Duration::ZERO);
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    t.record_failure(IP1, None, now);
    assert_eq!(
        t.delay_before_reply(mapped, None, now),
        Duration::from_secs(1)
    );
    let _ = Ipv6Addr::LOCALHOST;
}

#[test]
fn memory_is_bounded_and_oldest_evicted() {
    let t = Throttle::new(ThrottleConfig {
        max_tracked: 100,
        ..cfg()
    });
    let start = Instant::now();
    for i in 0..10_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        t.record_failure(
            ip,
            Some(&format!("user{i}")),
            start + Duration::from_millis(u64::from(i)),
        );
    }
    let (ips, users) = t.tracked();
    assert!(ips <= 100 && users <= 100, "{ips} {users}");
    // The newest survive, the oldest were evicted.
    let end = start + Duration::from_secs(10);
    assert!(
        t.delay_before_reply(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 9_999)), None, end)
            > Duration::ZERO
    );
    assert_eq!(
        t.delay_before_reply(IpAddr::V4(Ipv4Addr::from(0x0a00_0000)), None, end),
        Duration::ZERO
    );
}

#[test]
fn time_going_backwards_is_harmless() {
    let t = Throttle::new(cfg());
    let now = Instant::now() + Duration::from_secs(100);
    t.record_failure(IP1, Some("bob"), now);
    let earlier = now - Duration::from_secs(50);
    assert_eq!(
        t.record_failure(IP1, Some("bob"), earlier),
        Duration::from_secs(2)
    );
    assert_eq!(
        t.delay_before_reply(IP1, None, earlier),
        Duration::from_secs(2)
    );
}

#[test]
fn zero_capacity_tracks_nothing() {
    let t = Throttle::new(ThrottleConfig {
        max_tracked: 0,
        ..cfg()
    });
    assert_eq!(
        t.record_failure(IP1, Some("x"), Instant::now()),
        Duration::ZERO
    );
    assert_eq!(t.tracked(), (0, 0));
}

#[test]
fn default_config_is_sane() {
    let c = ThrottleConfig::default();
    assert!(c.base_delay >= Duration::from_secs(1) && c.max_delay <= Duration::from_secs(60));
    let t = Throttle::default();
    assert_eq!(t.record_failure(IP1, None, Instant::now()), c.base_delay);
}
