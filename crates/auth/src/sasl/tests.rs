use super::*;
use crate::scheme::{HashParams, Scheme, hash_password};

fn rec(line: &str) -> UserRecord {
    UserRecord::parse_line(line).unwrap().unwrap()
}

fn params() -> ServerParams {
    ServerParams {
        cram_md5_challenge: "<1896.697170952@postoffice.reston.mci.net>".into(),
    }
}

/// Runs a client against a server mechanism in memory, the way the protocol layer
/// would (two-step when `initial` is false).
fn run(
    kind: ClientMechanismKind,
    mech: Mechanism,
    creds: ClientCredentials,
    users: &dyn SecretLookup,
    initial: bool,
) -> (Result<String, SaslError>, ClientMechanism) {
    let mut client = ClientMechanism::new(kind, creds).unwrap();
    let mut server = ServerMechanism::new(mech, &params());
    let ir = if initial {
        client.initial_response()
    } else {
        None
    };
    let mut step = server.start(ir.as_deref(), users);
    for _ in 0..10 {
        match step {
            Ok(Step::Challenge(c)) => match client.step(&c) {
                Ok(resp) => step = server.step(&resp, users),
                Err(e) => return (Err(e), client),
            },
            Ok(Step::Success { user }) => {
                let fin = client.finish().map(|()| user);
                return (fin, client);
            }
            Err(e) => return (Err(e), client),
        }
    }
    panic!("exchange did not end");
}

fn users() -> Vec<UserRecord> {
    let fast = HashParams::insecure_fast_for_tests();
    let mk = |name: &str, scheme: Scheme| {
        let s = hash_password(&scheme, b"pencil", &fast).unwrap();
        rec(&format!("{name}:{}", s.as_stored()))
    };
    vec![
        rec("plain:{PLAIN}pencil"),
        mk("argon", Scheme::Argon2id),
        mk("cram", Scheme::CramMd5),
        mk("scram", Scheme::ScramSha256),
        mk("sha", Scheme::Sha512Crypt),
        rec("nopw:::::::nopassword"),
        rec("empty:"),
        rec("locked:{PLAIN}pencil::::::nologin reason=gone"),
    ]
}

#[test]
fn client_and_server_agree_for_every_mechanism_and_secret() {
    let users = users();
    let cases: &[(ClientMechanismKind, Mechanism, &[&str])] = &[
        (
            ClientMechanismKind::Plain,
            Mechanism::Plain,
            &["plain", "argon", "cram", "scram", "sha", "nopw"],
        ),
        (
            ClientMechanismKind::Login,
            Mechanism::Login,
            &["plain", "argon", "cram", "scram", "sha", "nopw"],
        ),
        (
            ClientMechanismKind::CramMd5,
            Mechanism::CramMd5,
            &["plain", "cram"],
        ),
        (
            ClientMechanismKind::ScramSha256,
            Mechanism::ScramSha256,
            &["plain", "scram"],
        ),
    ];
    for (kind, mech, ok_users) in cases {
        for u in &users {
            for initial in [true, false] {
                let creds = ClientCredentials::new(&u.name, "pencil");
                let (res, _) = run(*kind, *mech, creds, &users, initial);
                let should = ok_users.contains(&u.name.as_str());
                assert_eq!(
                    res.is_ok(),
                    should,
                    "{mech} for {} (initial {initial}): {res:?}",
                    u.name
                );
                if should {
                    assert_eq!(res.unwrap(), u.name);
                    assert!(secret_caps(u).allows(*mech));
                } else {
                    assert!(
                        matches!(res, Err(SaslError::AuthFailed(_))),
                        "{mech} {}: {res:?}",
                        u.name
                    );
                }
                if !initial
                    || (mech.is_cleartext() && !["plain", "sha", "nopw"].contains(&u.name.as_str()))
                {
                    // Failed PLAIN/LOGIN checks are padded to a dummy ARGON2ID check's
                    // cost: test wrong passwords once, and for a few secrets only there.
                    continue;
                }
                let creds = ClientCredentials::new(&u.name, "wrong");
                let (res, _) = run(*kind, *mech, creds, &users, initial);
                if u.nopassword() {
                    // Dovecot's `nopassword`: any password is accepted.
                    assert_eq!(res.is_ok(), should);
                    continue;
                }
                assert!(
                    matches!(res, Err(SaslError::AuthFailed(_))),
                    "{mech} wrong pw for {}: {res:?}",
                    u.name
                );
            }
        }
    }
}

#[test]
fn unknown_user_fails_like_a_wrong_password() {
    let users = users();
    for (kind, mech) in [
        (ClientMechanismKind::Plain, Mechanism::Plain),
        (ClientMechanismKind::Login, Mechanism::Login),
        (ClientMechanismKind::CramMd5, Mechanism::CramMd5),
        (ClientMechanismKind::ScramSha256, Mechanism::ScramSha256),
    ] {
        let (unknown, _) = run(
            kind,
            mech,
            ClientCredentials::new("ghost", "pencil"),
            &users,
            true,
        );
        let (wrong, _) = run(
            kind,
            mech,
            ClientCredentials::new("plain", "nope"),
            &users,
            true,
        );
        match (unknown, wrong) {
            (Err(SaslError::AuthFailed(a)), Err(SaslError::AuthFailed(b))) => {
                assert_eq!(a.reason, FailureReason::UnknownUser);
                assert_eq!(b.reason, FailureReason::WrongPassword);
                assert_eq!(a.user, "ghost");
            }
            other => panic!("{mech}: {other:?}"),
        }
    }
}

#[test]
fn scram_fake_salt_is_stable_for_unknown_users() {
    let users = users();
    let first = |name: &str| {
        let mut s = ServerMechanism::new(Mechanism::ScramSha256, &params());
        match s
            .start(Some(format!("n,,n={name},r=abc").as_bytes()), &users)
            .unwrap()
        {
            Step::Challenge(c) => {
                let t = String::from_utf8(c).unwrap();
                t.split(',').skip(1).collect::<Vec<_>>().join(",")
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(first("ghost"), first("ghost"));
    assert_ne!(first("ghost"), first("ghost2"));
    assert!(first("ghost").ends_with(",i=4096"));
    // A user with an unsuitable secret looks the same as any other.
    assert_eq!(first("argon"), first("argon"));
}

#[test]
fn rfc7677_scram_sha256_example() {
    let keys = crate::scheme::ScramKeys::derive(
        b"pencil",
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "W22ZaJ0SNY7soEsUEjb6gQ==",
        )
        .unwrap(),
        4096,
    );
    let b = |k: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k);
    let users = vec![rec(&format!(
        "user:{{SCRAM-SHA-256}}4096,W22ZaJ0SNY7soEsUEjb6gQ==,{},{}",
        b(&keys.stored_key),
        b(&keys.server_key)
    ))];
    // Client side, with the RFC's nonce.
    let mut client = ClientMechanism::new(
        ClientMechanismKind::ScramSha256,
        ClientCredentials::new("user", "pencil"),
    )
    .unwrap()
    .with_scram_nonce("rOprNGfwEbeRWgbNEkqO");
    assert_eq!(
        client.initial_response().unwrap(),
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    );
    let server_first =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    let client_final = client.step(server_first).unwrap();
    assert_eq!(
        client_final,
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    assert_eq!(
        client.finish(),
        Err(SaslError::Incomplete),
        "success before v= must be refused"
    );
    let server_final = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(client.step(server_final).unwrap(), b"");
    assert_eq!(client.finish(), Ok(()));

    // Server side, with the RFC's server nonce part.
    let mut server = ServerMechanism::new(Mechanism::ScramSha256, &params());
    server.test_nonce = Some("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into());
    assert_eq!(
        server
            .start(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"), &users)
            .unwrap(),
        Step::Challenge(server_first.to_vec())
    );
    assert_eq!(
        server.step(&client_final, &users).unwrap(),
        Step::Challenge(server_final.to_vec())
    );
    assert_eq!(
        server.step(b"", &users).unwrap(),
        Step::Success {
            user: "user".into()
        }
    );
}

#[test]
fn scram_client_detects_an_impostor_server() {
    let mut client = ClientMechanism::new(
        ClientMechanismKind::ScramSha256,
        ClientCredentials::new("user", "pencil"),
    )
    .unwrap()
    .with_scram_nonce("rOprNGfwEbeRWgbNEkqO");
    client.initial_response().unwrap();
    client.step(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").unwrap();
    assert_eq!(
        client.step(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        Err(SaslError::ServerSignatureMismatch)
    );
    assert!(client.finish().is_err());
}

#[test]
fn scram_client_refuses_bad_server_first() {
    for bad in [
        &b"r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"[..],
        b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"r=abcX,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",
        b"r=abcX,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4000000000",
        b"r=abcX,s=!!,i=4096",
        b"m=x,r=abcX,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"e=other-error",
        b"garbage",
    ] {
        let mut client = ClientMechanism::new(
            ClientMechanismKind::ScramSha256,
            ClientCredentials::new("u", "p"),
        )
        .unwrap()
        .with_scram_nonce("abc");
        client.initial_response().unwrap();
        assert!(
            client.step(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn scram_server_refuses_bad_messages() {
    let users = users();
    let start =
        |m: &[u8]| ServerMechanism::new(Mechanism::ScramSha256, &params()).start(Some(m), &users);
    assert_eq!(
        start(b"p=tls-unique,,n=plain,r=abc"),
        Err(SaslError::ChannelBindingUnsupported)
    );
    assert_eq!(
        start(b"n,a=other,n=plain,r=abc"),
        Err(SaslError::AuthzidRefused)
    );
    assert!(start(b"n,a=plain,n=plain,r=abc").is_ok());
    assert!(start(b"y,,n=plain,r=abc").is_ok());
    for bad in [
        &b"x,,n=plain,r=abc"[..],
        b"n,,r=abc,n=plain",
        b"n,,n=pl=ZZain,r=abc",
        b"n,,n=plain,r=a,b",
        b"n,,m=ext,n=a,r=b",
        b"n",
        b"\xff",
    ] {
        assert!(
            matches!(start(bad), Err(SaslError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(matches!(
        start(b"n,,n=a/b,r=abc"),
        Err(SaslError::BadUsername(_))
    ));
    // Client-final with a tampered nonce or channel binding.
    for bad in [
        &b"c=biws,r=WRONG,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="[..],
        b"c=eSws,r=abc,p=AA==",
    ] {
        let mut s = ServerMechanism::new(Mechanism::ScramSha256, &params());
        s.start(Some(b"n,,n=plain,r=abc"), &users).unwrap();
        assert!(matches!(s.step(bad, &users), Err(SaslError::Malformed(_))));
    }
}

#[test]
fn rfc2195_cram_md5_example() {
    let users = vec![rec("tim:{PLAIN}tanstaaftanstaaf")];
    let mut client = ClientMechanism::new(
        ClientMechanismKind::CramMd5,
        ClientCredentials::new("tim", "tanstaaftanstaaf"),
    )
    .unwrap();
    assert_eq!(client.initial_response(), None);
    let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
    let response = client.step(challenge).unwrap();
    assert_eq!(response, b"tim b913a602c7eda7a495b4e6e7334d3890");
    let mut server = ServerMechanism::new(Mechanism::CramMd5, &params());
    assert_eq!(
        server.start(None, &users).unwrap(),
        Step::Challenge(challenge.to_vec())
    );
    assert_eq!(
        server.step(&response, &users).unwrap(),
        Step::Success { user: "tim".into() }
    );
    // Same with the secret stored as Dovecot's CRAM-MD5 context.
    let ctx = hash_password(
        &Scheme::CramMd5,
        b"tanstaaftanstaaf",
        &HashParams::default(),
    )
    .unwrap();
    let users = vec![rec(&format!("tim:{}", ctx.as_stored()))];
    let mut server = ServerMechanism::new(Mechanism::CramMd5, &params());
    server.start(None, &users).unwrap();
    assert_eq!(
        server.step(&response, &users).unwrap(),
        Step::Success { user: "tim".into() }
    );
    // An initial response is not allowed: the server speaks first.
    let mut server = ServerMechanism::new(Mechanism::CramMd5, &params());
    assert_eq!(
        server.start(Some(b"x"), &users),
        Err(SaslError::UnexpectedStep)
    );
    for bad in [
        &b"tim"[..],
        b"tim b913",
        b"tim zz13a602c7eda7a495b4e6e7334d3890",
        b"",
    ] {
        let mut server = ServerMechanism::new(Mechanism::CramMd5, &params());
        server.start(None, &users).unwrap();
        assert!(matches!(
            server.step(bad, &users),
            Err(SaslError::Malformed(_))
        ));
    }
}

#[test]
fn rfc4616_plain_examples() {
    let users = vec![
        rec("tim:{PLAIN}tanstaaftanstaaf"),
        rec("Kurt:{PLAIN}xipj3plmq"),
    ];
    let start = |m: &[u8]| ServerMechanism::new(Mechanism::Plain, &params()).start(Some(m), &users);
    assert_eq!(
        start(b"\0tim\0tanstaaftanstaaf"),
        Ok(Step::Success { user: "tim".into() })
    );
    assert_eq!(
        start(b"tim\0tim\0tanstaaftanstaaf"),
        Ok(Step::Success { user: "tim".into() })
    );
    // RFC 4616's second example asks to act as another user: we refuse proxy logins.
    assert_eq!(
        start(b"Ursel\0Kurt\0xipj3plmq"),
        Err(SaslError::AuthzidRefused)
    );
    assert!(matches!(
        start(b"\0tim\0wrong"),
        Err(SaslError::AuthFailed(_))
    ));
    for bad in [
        &b"\0tim"[..],
        b"\0tim\0pw\0x",
        b"tim",
        b"",
        b"\0\0pw",
        b"\0tim\0",
    ] {
        assert!(start(bad).is_err(), "{:?}", bad);
    }
    assert!(matches!(
        start(b"\0a\rb\0pw"),
        Err(SaslError::BadUsername(_))
    ));
    assert!(matches!(start(&[b'a'; 5000]), Err(SaslError::Malformed(_))));
    // Without an initial response the server sends an empty challenge.
    let mut m = ServerMechanism::new(Mechanism::Plain, &params());
    assert_eq!(m.start(None, &users).unwrap(), Step::Challenge(vec![]));
    assert_eq!(
        m.step(b"\0tim\0tanstaaftanstaaf", &users).unwrap(),
        Step::Success { user: "tim".into() }
    );
    assert!(m.is_done());
    assert_eq!(m.step(b"again", &users), Err(SaslError::UnexpectedStep));
}

#[test]
fn login_mechanism_prompts_and_accepts_initial_username() {
    let users = vec![rec("tim:{PLAIN}tanstaaftanstaaf")];
    let mut m = ServerMechanism::new(Mechanism::Login, &params());
    assert_eq!(
        m.start(None, &users).unwrap(),
        Step::Challenge(b"Username:".to_vec())
    );
    assert_eq!(
        m.step(b"tim", &users).unwrap(),
        Step::Challenge(b"Password:".to_vec())
    );
    assert_eq!(
        m.step(b"tanstaaftanstaaf", &users).unwrap(),
        Step::Success { user: "tim".into() }
    );
    let mut m = ServerMechanism::new(Mechanism::Login, &params());
    assert_eq!(
        m.start(Some(b"tim"), &users).unwrap(),
        Step::Challenge(b"Password:".to_vec())
    );
    assert!(matches!(
        m.step(b"bad", &users),
        Err(SaslError::AuthFailed(_))
    ));
    let mut m = ServerMechanism::new(Mechanism::Login, &params());
    m.start(None, &users).unwrap();
    assert!(matches!(
        m.step(b"../etc", &users),
        Err(SaslError::BadUsername(_))
    ));
}

#[test]
fn xoauth2_and_oauthbearer_messages() {
    let token = "t".repeat(20_000);
    let mut x = ClientMechanism::new(
        ClientMechanismKind::XOAuth2,
        ClientCredentials::new("me@example.org", &token),
    )
    .unwrap();
    let ir = x.initial_response().unwrap();
    assert_eq!(
        ir,
        format!("user=me@example.org\x01auth=Bearer {token}\x01\x01").into_bytes()
    );
    assert_eq!(x.finish(), Ok(()));
    // Error JSON as a challenge: answer with an empty response, report it.
    let err = br#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
    assert_eq!(x.step(err).unwrap(), b"");
    assert!(x.server_error().unwrap().contains("401"));
    assert!(matches!(x.finish(), Err(SaslError::ServerError(_))));

    let mut creds = ClientCredentials::new("me,x=y@example.org", "tok");
    creds.host = Some("pop.example.org".into());
    creds.port = Some(995);
    let mut o = ClientMechanism::new(ClientMechanismKind::OAuthBearer, creds).unwrap();
    // Two-step form: the empty challenge asks for the initial response.
    let first = o.step(b"").unwrap();
    assert_eq!(first, b"n,a=me=2Cx=3Dy@example.org,\x01host=pop.example.org\x01port=995\x01auth=Bearer tok\x01\x01");
    assert_eq!(o.step(br#"{"status":"invalid_token"}"#).unwrap(), b"\x01");
    assert!(o.finish().is_err());
    assert!(
        ClientMechanism::new(
            ClientMechanismKind::OAuthBearer,
            ClientCredentials::new("a", "bad\x01tok")
        )
        .is_err()
    );
    assert!(
        ClientMechanism::new(
            ClientMechanismKind::Plain,
            ClientCredentials::new("a\0b", "x")
        )
        .is_err()
    );
    assert!(
        ClientMechanism::new(
            ClientMechanismKind::CramMd5,
            ClientCredentials::new("a b", "x")
        )
        .is_err()
    );
}

#[test]
fn mechanism_names_round_trip() {
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
    }
    assert_eq!(Mechanism::from_name("XOAUTH2"), None);
    assert_eq!(
        ClientMechanismKind::from_name("oauthbearer"),
        Some(ClientMechanismKind::OAuthBearer)
    );
    assert!(Mechanism::Plain.is_cleartext() && !Mechanism::CramMd5.is_cleartext());
}

#[test]
fn what_each_secret_allows() {
    let users = users();
    let get = |n: &str| users.iter().find(|u| u.name == n).unwrap();
    use Mechanism::*;
    assert_eq!(
        mechanisms_for(get("plain")),
        vec![ScramSha256, CramMd5, Plain, Login]
    );
    assert_eq!(mechanisms_for(get("argon")), vec![Plain, Login]);
    assert_eq!(mechanisms_for(get("cram")), vec![CramMd5, Plain, Login]);
    assert_eq!(
        mechanisms_for(get("scram")),
        vec![ScramSha256, Plain, Login]
    );
    assert_eq!(mechanisms_for(get("nopw")), vec![Plain, Login]);
    assert_eq!(mechanisms_for(get("empty")), vec![]);
    assert_eq!(mechanisms_for(get("locked")), vec![]);
    assert!(secret_caps(get("plain")).apop && !secret_caps(get("cram")).apop);
    let db = crate::userdb::UserDb::from_records(users.clone(), Default::default());
    assert!(any_user_allows(&db, CramMd5));
    let db = crate::userdb::UserDb::from_records(vec![get("argon").clone()], Default::default());
    assert!(!any_user_allows(&db, ScramSha256));
}

#[test]
fn verify_login_honours_dovecot_flags() {
    let users = users();
    assert_eq!(
        verify_login(&users, "plain", b"pencil").unwrap().name,
        "plain"
    );
    assert_eq!(
        verify_login(&users, "argon", b"pencil").unwrap().name,
        "argon"
    );
    assert_eq!(
        verify_login(&users, "nopw", b"anything").unwrap().name,
        "nopw"
    );
    let reason = |u: &str, p: &[u8]| match verify_login(&users, u, p) {
        Err(SaslError::AuthFailed(f)) => f.reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason("empty", b""), FailureReason::NoPassword);
    assert_eq!(reason("locked", b"pencil"), FailureReason::Disabled);
    // A wrong password for a nologin user does not reveal the nologin.
    assert_eq!(reason("locked", b"nope"), FailureReason::WrongPassword);
    assert_eq!(reason("ghost", b"pencil"), FailureReason::UnknownUser);
    assert_eq!(
        reason("Plain", b"pencil"),
        FailureReason::UnknownUser,
        "lookups are exact by default"
    );
    assert!(matches!(
        verify_login(&users, "a%n", b"x"),
        Err(SaslError::BadUsername(_))
    ));
}

#[test]
fn rfc1939_apop_example() {
    let ts = "<1896.697170952@dbc.mtview.ca.us>";
    let mrose = rec("mrose:{PLAIN}tanstaaf");
    assert_eq!(
        apop_verify(ts, "c4c9334bac560ecc979e58001b3e22fb", Some(&mrose)),
        Ok(())
    );
    assert_eq!(
        apop_verify(ts, "C4C9334BAC560ECC979E58001B3E22FB", Some(&mrose)),
        Ok(())
    );
    assert_eq!(
        apop_verify(ts, "c4c9334bac560ecc979e58001b3e22fa", Some(&mrose)),
        Err(FailureReason::WrongPassword)
    );
    assert_eq!(
        apop_verify(ts, "zz", Some(&mrose)),
        Err(FailureReason::WrongPassword)
    );
    assert_eq!(
        apop_verify(ts, "c4c9334bac560ecc979e58001b3e22fb", None),
        Err(FailureReason::UnknownUser)
    );
    let hashed = rec(
        "mrose:{SHA512}W3IrMH/ObJRJBdEyaR1eSiIUt/6StziSDrP846kEIKGVEcMBCg53ErBU2u9bV7rVnsvZOzKA8hBXj1R/Su1NJQ==",
    );
    assert_eq!(
        apop_verify(ts, "c4c9334bac560ecc979e58001b3e22fb", Some(&hashed)),
        Err(FailureReason::SecretUnsuitable)
    );
}

#[test]
fn cheap_scheme_failures_take_as_long_as_unknown_users() {
    crate::scheme::warm_up_dummy();
    let users = vec![rec("cheap:{PLAIN}pencil")];
    let time = |u: &str, p: &[u8]| {
        let t = std::time::Instant::now();
        let r = verify_login(&users, u, p);
        (t.elapsed(), r.is_ok())
    };
    let (unknown, ok1) = time("ghost", b"pencil");
    let (wrong, ok2) = time("cheap", b"nope");
    let (right, ok3) = time("cheap", b"pencil");
    assert!(!ok1 && !ok2 && ok3);
    // A PLAIN comparison takes microseconds; padded it costs about a dummy ARGON2ID
    // check (a moving average; allow for noise on a busy machine).
    assert!(
        wrong * 4 >= unknown,
        "wrong {wrong:?} vs unknown {unknown:?}"
    );
    assert!(wrong > std::time::Duration::from_millis(2), "{wrong:?}");
    // A correct password is never padded.
    assert!(right < wrong, "right {right:?} vs wrong {wrong:?}");
}

#[test]
fn doveadm_made_scram_and_cram_secrets_work_with_our_mechanisms() {
    // `doveadm pw -s SCRAM-SHA-256 -p pass` and `-s CRAM-MD5`.
    let users = vec![
        rec(
            "carol:{SCRAM-SHA-256}4096,Y4pQJFL7mRZ3G2kwv1p7xg==,KpUHu6j3B8XkV59/xezd5l9yu9TwDFN77n1CKfVbsaU=,4iOVXZbKpuA0neGfgVEKIF7Tx5hZLVY1Xw+S6xJ3k8Q=",
        ),
        rec("dave:{CRAM-MD5}ff5d74b19e3cb9b2b9f4fcb548fe023aeb44f67f231a5a89714d08b5fec22b78"),
    ];
    let (r, _) = run(
        ClientMechanismKind::ScramSha256,
        Mechanism::ScramSha256,
        ClientCredentials::new("carol", "pass"),
        &users,
        true,
    );
    assert_eq!(r, Ok("carol".to_owned()));
    let (r, _) = run(
        ClientMechanismKind::CramMd5,
        Mechanism::CramMd5,
        ClientCredentials::new("dave", "pass"),
        &users,
        false,
    );
    assert_eq!(r, Ok("dave".to_owned()));
}

#[test]
fn mechanisms_can_move_into_spawn_blocking() {
    // The documented driving contract moves mechanisms and an `Arc<UserDb>` into
    // blocking threads: pin the auto traits it relies on.
    fn send_static<T: Send + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    send_static::<ServerMechanism>();
    send_static::<ClientMechanism>();
    send_static::<Result<Step, SaslError>>();
    shared::<crate::userdb::UserDb>();
    shared::<crate::throttle::Throttle>();
}
