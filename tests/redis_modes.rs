//! The gateway on Redis deployments beyond one server (docs/PROTOCOL.md
//! §8, "Redis modes"): a 3-master Redis Cluster with sharded pub/sub, a
//! master and replica under Sentinel, and TLS verified against a CA. The
//! real binary, real redis-servers and WebSocket clients that count every
//! offset.

mod common;

use common::durable::{Audit, Resumer, Stop};
use common::topologies::{RedisCluster, SentinelSet, TlsRedis};
use common::{Client, Node, NodeOptions, token, wait_for};
use serde_json::{Value, json};

const CLEAN: Audit = Audit {
    lost: 0,
    duplicated: 0,
    out_of_order: 0,
};

/// A node in cluster mode on `cluster`, with history for `org:` rooms.
fn on_cluster(cluster: &RedisCluster) -> NodeOptions {
    NodeOptions::redis_url(&cluster.url())
        .env("WSGATE_REDIS_MODE", "cluster")
        .env("WSGATE_HISTORY_NAMESPACES", "org")
        .env("WSGATE_PRESENCE_NAMESPACES", "org")
}

/// A node on `cluster` logging (info) to a file, and a resuming client that
/// has received offsets 1-3 of `room`, published through the node's API.
async fn logged_node_with_three_events(
    cluster: &RedisCluster,
    name: &str,
    room: &str,
) -> (Node, std::path::PathBuf, Resumer) {
    let log = common::temp_dir(name).join("node.log");
    let node = Node::start(on_cluster(cluster).env("WSGATE_LOG", "info").log_to(&log)).await;
    let mut client = Resumer::new(token("1", Some("acme"), &[], 3600));
    client.connect(&node.ws_url()).await.unwrap();
    for i in 1..=3 {
        assert_eq!(api_publish(&node, room, i).await, Some(i));
    }
    assert_eq!(client.read_until(room, 3).await, Stop::Reached);
    (node, log, client)
}

/// How many times the node's log says it re-subscribed every room.
fn resubscribes(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("every live room re-subscribed")
        .count()
}

fn event(i: u64) -> String {
    json!({"event": "e", "data": {"i": i}}).to_string()
}

/// `POST /api/v1/publish` to one room; the offset it got (if durable).
async fn api_publish(node: &Node, room: &str, i: u64) -> Option<u64> {
    let response = node
        .api(reqwest::Method::POST, "/api/v1/publish")
        .json(&json!({"rooms": [room], "event": "e", "data": {"i": i}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202, "publish to {room}");
    let body: Value = response.json().await.expect("json");
    body["data"]["positions"][room]["offset"].as_u64()
}

/// Rooms `org:o0 … org:o{n-1}`, whose channels spread over the shards.
fn orgs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("o{i}")).collect()
}

/// Two members of `room` (`org:acme`, their tokens' org) on `node`, after
/// offsets 1..=5 were published to it: one that stays connected through the
/// fault to come, and one whose connection is dropped before it, to resume
/// afterwards.
async fn stays_and_leaves(node: &Node, room: &str) -> (Resumer, Resumer) {
    let mut stays = Resumer::new(token("1", Some("acme"), &[], 3600));
    stays.connect(&node.ws_url()).await.unwrap();
    let mut leaves = Resumer::new(token("2", Some("acme"), &[], 3600));
    leaves.connect(&node.ws_url()).await.unwrap();
    for i in 1..=5 {
        assert_eq!(api_publish(node, room, i).await, Some(i));
    }
    (stays, leaves)
}

/// After the fault: the member that stayed got offsets 1..=`last` on its
/// one connection; the one that left resumes, recovers, and gets them too.
async fn both_have_everything(node: &Node, room: &str, last: u64, stays: &mut Resumer, leaves: &mut Resumer) {
    assert_eq!(
        stays.read_until(room, last).await,
        Stop::Reached,
        "the connected client"
    );
    assert_eq!(stays.ledger.room(room).audit(last), CLEAN);
    assert_eq!(stays.welcomes, 1, "it stayed connected throughout");
    let welcome = leaves.connect(&node.ws_url()).await.unwrap();
    assert_eq!(welcome["recovered"][room], true, "{welcome}");
    assert_eq!(leaves.read_until(room, last).await, Stop::Reached);
    assert_eq!(leaves.ledger.room(room).audit(last), CLEAN);
}

#[tokio::test]
async fn two_nodes_on_a_cluster_deliver_every_event_once_through_the_owning_shard_only() {
    let cluster = RedisCluster::start(3).await;
    let a = Node::start(on_cluster(&cluster)).await;
    let b = Node::start(on_cluster(&cluster)).await;
    let orgs = orgs(6);
    let mut shards_used = std::collections::BTreeSet::new();
    for org in &orgs {
        shards_used.insert(cluster.owner(&format!("gw:org:{org}")).await);
    }
    assert!(shards_used.len() >= 2, "the rooms spread over several shards");

    // One client per org on each node.
    let mut clients = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        for node in [&a, &b] {
            let mut client = Resumer::new(token(&format!("{i}{}", node.addr.port()), Some(org), &[], 3600));
            client.connect(&node.ws_url()).await.unwrap();
            clients.push((org.clone(), client));
        }
    }
    for org in &orgs {
        let channel = format!("gw:org:{org}");
        let owner = cluster.owner(&channel).await;
        for shard in 0..3 {
            let wanted = if shard == owner { 2 } else { 0 };
            assert_eq!(
                cluster.shard_numsub(shard, &channel).await,
                wanted,
                "SHARDNUMSUB {channel} on shard {shard} (owner {owner})"
            );
            assert_eq!(cluster.numsub(shard, &channel).await, 0, "no classic subscription");
        }
    }

    // Durable events through either node's API and through FCALL on the
    // owning shard: contiguous offsets, each delivered once on both nodes.
    const PER_ROOM: u64 = 30;
    for i in 1..=PER_ROOM {
        for org in &orgs {
            let room = format!("org:{org}");
            let offset = match i % 3 {
                0 => api_publish(&a, &room, i).await,
                1 => api_publish(&b, &room, i).await,
                _ => cluster.fcall_publish(&room, &event(i)).await.ok(),
            };
            assert_eq!(offset, Some(i), "offset of event {i} in {room}");
        }
    }
    for (org, client) in &mut clients {
        let room = format!("org:{org}");
        assert_eq!(client.read_until(&room, PER_ROOM).await, Stop::Reached, "{room}");
        assert_eq!(client.ledger.room(&room).audit(PER_ROOM), CLEAN, "{room}");
    }

    // Presence is cluster-wide on the room's shard too: one user per node.
    wait_for("both nodes' users in org:o0's presence", || async {
        let presence: Value = b
            .api(reqwest::Method::GET, "/api/v1/rooms/org:o0/presence")
            .send()
            .await
            .expect("presence")
            .json()
            .await
            .expect("json");
        presence["meta"]["users"] == 2
    })
    .await;

    // Plain SPUBLISH (at-most-once, no offset) reaches both nodes too.
    let mut plain = Client::user(&a, "p1", Some("o0"), &[]).await;
    let mut plain_b = Client::user(&b, "p2", Some("o0"), &[]).await;
    assert_eq!(cluster.spublish("org:o0", &event(0)).await, 2, "both nodes receive it");
    for client in [&mut plain, &mut plain_b] {
        let frame = client.recv_type("event").await;
        assert_eq!(frame["room"], "org:o0");
        assert!(frame.get("offset").is_none(), "plain publish has no offset: {frame}");
    }
}

#[tokio::test]
async fn a_restarted_shard_keeps_clients_connected_and_resuming_clients_recover() {
    let mut cluster = RedisCluster::start(3).await;
    let node = Node::start(on_cluster(&cluster)).await;
    let room = "org:acme";
    let owner = cluster.owner("gw:org:acme").await;
    let (mut stays, mut leaves) = stays_and_leaves(&node, room).await;
    // A room on another shard, whose events during the outage must arrive.
    let mut other_org = None;
    for org in orgs(12) {
        if cluster.owner(&format!("gw:org:{org}")).await != owner {
            other_org = Some(org);
            break;
        }
    }
    let other_org = other_org.expect("a room on another shard");
    let other_room = format!("org:{other_org}");
    let mut elsewhere = Resumer::new(token("3", Some(&other_org), &[], 3600));
    elsewhere.connect(&node.ws_url()).await.unwrap();

    assert_eq!(stays.read_until(room, 5).await, Stop::Reached);
    assert_eq!(leaves.read_until(room, 5).await, Stop::Reached);
    leaves.drop_connection();

    cluster.kill(owner).await;
    // The other shards keep taking events meanwhile. The node may not get
    // them live (its cluster client reconnects as a whole), so they reach
    // its clients through the repair after it re-subscribes: nothing lost.
    assert_eq!(cluster.fcall_publish(&other_room, &event(1)).await, Ok(1));
    cluster.restart(owner).await;

    // The node re-subscribes on the restarted shard; publishes resume with
    // the offsets the shard's AOF kept.
    wait_for("FCALL on the restarted shard", || {
        let cluster = &cluster;
        async move { cluster.fcall_publish(room, &event(6)).await == Ok(6) }
    })
    .await;
    node.wait_ready().await;
    for i in 7..=10 {
        assert_eq!(api_publish(&node, room, i).await, Some(i));
    }
    both_have_everything(&node, room, 10, &mut stays, &mut leaves).await;

    assert_eq!(elsewhere.read_until(&other_room, 1).await, Stop::Reached);
    assert_eq!(api_publish(&node, &other_room, 2).await, Some(2));
    assert_eq!(elsewhere.read_until(&other_room, 2).await, Stop::Reached);
    assert_eq!(elsewhere.ledger.room(&other_room).audit(2), CLEAN);
}

#[tokio::test]
async fn a_failover_to_the_replica_is_followed_with_nothing_lost() {
    let mut cluster = RedisCluster::start(3).await;
    let (room, channel) = ("org:acme", "gw:org:acme");
    let owner = cluster.owner(channel).await;
    let replica = cluster.add_replica(owner).await;
    let node = Node::start(on_cluster(&cluster)).await;
    let (mut stays, mut leaves) = stays_and_leaves(&node, room).await;
    // Replicated before the master dies (Redis replicates asynchronously:
    // without this a failover may lose the last writes, and the resume
    // below would honestly say recovered:false).
    let acked = cluster.cmd(owner, &["WAIT", "1", "5000"]).await;
    assert_eq!(common::topologies::last_integer(&acked), 1, "WAIT: {acked}");
    assert_eq!(stays.read_until(room, 5).await, Stop::Reached);
    assert_eq!(leaves.read_until(room, 5).await, Stop::Reached);
    leaves.drop_connection();

    cluster.kill(owner).await;
    cluster.wait_master(replica).await;
    assert_eq!(cluster.owner(channel).await, replica);
    wait_for("the node to subscribe on the promoted replica", || {
        let cluster = &cluster;
        async move { cluster.shard_numsub(replica, channel).await == 1 }
    })
    .await;
    node.wait_ready().await;
    for i in 6..=10 {
        assert_eq!(
            api_publish(&node, room, i).await,
            Some(i),
            "offsets continue on the promoted replica"
        );
    }
    both_have_everything(&node, room, 10, &mut stays, &mut leaves).await;
}

#[tokio::test]
async fn a_migrated_slot_is_followed_with_nothing_lost() {
    let cluster = RedisCluster::start(3).await;
    let (room, channel) = ("org:acme", "gw:org:acme");
    let (node, log, mut client) = logged_node_with_three_events(&cluster, "migrated-slot", room).await;

    let from = cluster.owner(channel).await;
    let to = (from + 1) % 3;
    let mut loads = Vec::new();
    for i in 0..3 {
        loads.push(cluster.function_loads(i).await);
    }
    let resubscribed = resubscribes(&log);
    cluster.move_slot(channel, to).await;
    // Published on the new owner before the node has re-subscribed there:
    // the node's repair after re-subscribing delivers them.
    for i in 4..=6 {
        assert_eq!(
            cluster.fcall_publish(room, &event(i)).await,
            Ok(i),
            "history moved with the slot"
        );
    }
    wait_for("the node to subscribe on the slot's new owner", || {
        let cluster = &cluster;
        async move { cluster.shard_numsub(to, channel).await == 1 }
    })
    .await;
    assert_eq!(
        cluster.shard_numsub(from, channel).await,
        0,
        "nothing left on the old owner"
    );
    // The node's own re-subscribe after it saw the move (fred may have
    // followed the slot already): a library load would have come before it.
    wait_for("the node to re-subscribe after the move", || async {
        resubscribes(&log) > resubscribed
    })
    .await;
    for (i, before) in loads.into_iter().enumerate() {
        assert_eq!(
            cluster.function_loads(i).await,
            before,
            "a slot moved between the same primaries loads no library again"
        );
    }
    for i in 7..=9 {
        assert_eq!(api_publish(&node, room, i).await, Some(i));
    }
    assert_eq!(client.read_until(room, 9).await, Stop::Reached);
    assert_eq!(client.ledger.room(room).audit(9), CLEAN);
    assert_eq!(client.welcomes, 1, "it stayed connected throughout");
}

#[tokio::test]
async fn a_slot_moved_to_a_new_master_gets_the_libraries_and_keeps_its_history() {
    let mut cluster = RedisCluster::start(3).await;
    let (room, channel) = ("org:acme", "gw:org:acme");
    let (_node, log, mut client) = logged_node_with_three_events(&cluster, "new-master", room).await;

    // A shard added to scale out starts with no function library.
    let added = cluster.add_master().await;
    assert_eq!(cluster.function_loads(added).await, 0);
    let resubscribed = resubscribes(&log);
    cluster.move_slot(channel, added).await;
    wait_for("the node to subscribe on the new master", || {
        let cluster = &cluster;
        async move { cluster.shard_numsub(added, channel).await == 1 }
    })
    .await;
    wait_for("the node to re-subscribe after the move", || async {
        resubscribes(&log) > resubscribed
    })
    .await;
    assert!(
        cluster.function_loads(added).await >= 1,
        "the node loaded its libraries there"
    );
    for i in 4..=6 {
        assert_eq!(
            cluster.fcall_publish(room, &event(i)).await,
            Ok(i),
            "a backend's FCALL works on the new master, and the offsets continue"
        );
    }
    assert_eq!(client.read_until(room, 6).await, Stop::Reached);
    assert_eq!(client.ledger.room(room).audit(6), CLEAN);
    assert_eq!(client.welcomes, 1, "it stayed connected throughout");
}

#[tokio::test]
async fn sentinel_mode_follows_the_promoted_replica() {
    let mut set = SentinelSet::start().await;
    let node = Node::start(NodeOptions::redis_url(&set.url()).env("WSGATE_REDIS_MODE", "sentinel")).await;
    let mut client = Client::user(&node, "1", Some("acme"), &[]).await;
    node.publish("org:acme", "before", json!(1)).await;
    assert_eq!(client.recv_type("event").await["event"], "before");

    set.kill_master().await;
    let replica = set.replica_port;
    wait_for("the Sentinel to promote the replica", || {
        let set = &set;
        async move { set.current_master().await == replica }
    })
    .await;
    node.wait_ready().await;
    // Ready means re-subscribed on the new master: a publish there arrives.
    wait_for("a publish on the promoted master to reach the node", || {
        let node = &node;
        async move {
            let status = node
                .api(reqwest::Method::POST, "/api/v1/publish")
                .json(&json!({"rooms": ["org:acme"], "event": "after", "data": 2}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            status == 202
        }
    })
    .await;
    assert_eq!(client.recv_type("event").await["event"], "after");
    assert_eq!(
        common::resp(replica, &["PUBSUB", "NUMSUB", "gw:org:acme"])
            .await
            .map(|r| common::topologies::last_integer(&r))
            .unwrap_or(0),
        1,
        "the node subscribed on the promoted replica"
    );
}

#[tokio::test]
async fn tls_is_verified_against_the_configured_ca_and_the_acl_user_logs_in() {
    let redis = TlsRedis::start().await;
    let node =
        Node::start(NodeOptions::redis_url(&redis.url()).env("WSGATE_REDIS_CA_FILE", redis.ca_file.display())).await;
    let mut client = Client::user(&node, "1", Some("acme"), &[]).await;
    node.publish("org:acme", "over-tls", json!(1)).await;
    assert_eq!(client.recv_type("event").await["event"], "over-tls");

    // A CA that did not sign the server's certificate: the node never
    // connects, says why, and stays unready (its clients are refused rather
    // than served without events).
    let (refused, _) = spawn_logged(&redis.url(), &redis.other_ca_file, "InvalidCertificate").await;
    assert_eq!(refused.status("/ready").await, 503);

    // The right CA but a wrong password for the ACL user: refused, and said,
    // without the password.
    let (denied, log) = spawn_logged(&redis.url_with_password("wrong"), &redis.ca_file, "WRONGPASS").await;
    assert_eq!(denied.status("/ready").await, 503);
    assert!(!log.contains("wrong@"), "the password is not logged: {log}");
    // The verified node is unaffected.
    node.publish("org:acme", "still", json!(2)).await;
    assert_eq!(client.recv_type("event").await["event"], "still");
}

/// A node on `url` verifying with `ca_file`, started without waiting for it
/// to be ready; returned once its log says `needle`, with the log.
async fn spawn_logged(url: &str, ca_file: &std::path::Path, needle: &str) -> (Node, String) {
    let log = common::temp_dir("redis-refused").join("node.log");
    let node = Node::spawn(
        NodeOptions::redis_url(url)
            .env("WSGATE_REDIS_CA_FILE", ca_file.display())
            .env("WSGATE_LOG", "info")
            .log_to(&log),
    )
    .await;
    let text = common::wait_for_log(&log, needle).await;
    (node, text)
}
