//! Redis deployments beyond one server, started by the tests from the real
//! binaries: a Cluster of masters (`redis-server --cluster-enabled yes`,
//! joined by `redis-cli --cluster create`), a master with a replica under
//! one Sentinel, and a TLS server with a CA made by the test.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::{free_port, resp, temp_dir, wait_for};

fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(format!("redis-{port}.log")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed (.ci/run installs it)")
}

async fn wait_pong(port: u16) {
    wait_for("redis-server to answer PING", || async move {
        matches!(resp(port, &["PING"]).await, Ok(reply) if reply.starts_with("+PONG"))
    })
    .await;
}

/// The integer of a `:n` reply, or of the last `:n` line of an array.
pub fn last_integer(reply: &str) -> i64 {
    reply
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .next_back()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

// ---------------------------------------------------------------- cluster

/// `redis-cli --cluster <args>`, which must succeed.
async fn redis_cli_cluster(args: &[String]) {
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("redis-cli must be installed (.ci/run installs it)");
    assert!(status.success(), "redis-cli --cluster {} failed", args[0]);
}

/// A Redis Cluster of masters without replicas, on free ports; killed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// Each master's cluster bus port, chosen like its port: the default
    /// (port + 10000) may fall in the ephemeral range, where a client
    /// socket can take it while the master is down for a restart.
    bus_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dirs: Vec<PathBuf>,
}

impl RedisCluster {
    pub async fn start(masters: usize) -> RedisCluster {
        let mut cluster = RedisCluster {
            ports: (0..masters).map(|_| free_port()).collect(),
            bus_ports: (0..masters).map(|_| free_port()).collect(),
            children: Vec::new(),
            dirs: (0..masters).map(|_| temp_dir("cluster")).collect(),
        };
        for i in 0..masters {
            let child = cluster.spawn(i);
            cluster.children.push(Some(child));
        }
        for &port in &cluster.ports {
            wait_pong(port).await;
        }
        let mut args = vec!["create".to_string()];
        args.extend(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        redis_cli_cluster(&args).await;
        cluster.wait_ok().await;
        cluster
    }

    fn spawn(&self, i: usize) -> Child {
        // Persistence keeps what a restarted shard held, as a real shard's
        // AOF (or a replica) would.
        spawn_redis(
            self.ports[i],
            &self.dirs[i],
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &self.bus_ports[i].to_string(),
                "--cluster-node-timeout",
                "2000",
                // The other shards keep serving while one is down, as they
                // do in production while a replica takes over.
                "--cluster-require-full-coverage",
                "no",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
        )
    }

    /// Start one more cluster-enabled redis-server, not yet in the cluster;
    /// its index.
    async fn start_another(&mut self) -> usize {
        let i = self.ports.len();
        self.ports.push(free_port());
        self.bus_ports.push(free_port());
        self.dirs.push(temp_dir("cluster"));
        let child = self.spawn(i);
        self.children.push(Some(child));
        wait_pong(self.ports[i]).await;
        i
    }

    /// Start one more master, empty (no slots), and join it to the cluster;
    /// its index.
    pub async fn add_master(&mut self) -> usize {
        let i = self.start_another().await;
        redis_cli_cluster(&[
            "add-node".to_string(),
            format!("127.0.0.1:{}", self.ports[i]),
            format!("127.0.0.1:{}", self.ports[0]),
        ])
        .await;
        self.wait_ok().await;
        i
    }

    /// `FUNCTION LOAD` calls master `i` has served (INFO commandstats).
    pub async fn function_loads(&self, i: usize) -> u64 {
        let info = self.cmd(i, &["INFO", "commandstats"]).await;
        info.lines()
            .find_map(|line| line.strip_prefix("cmdstat_function|load:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    }

    /// Every node reports `cluster_state:ok` and knows every master.
    pub async fn wait_ok(&self) {
        for &port in &self.ports {
            let masters = self.ports.len();
            wait_for("the cluster to be ok on every node", || async move {
                let info = resp(port, &["CLUSTER", "INFO"]).await.unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{masters}"))
            })
            .await;
        }
    }

    /// The seed list for `WSGATE_REDIS_URL`.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the master that owns `key`'s slot.
    pub async fn owner(&self, key: &str) -> usize {
        for (i, &port) in self.ports.iter().enumerate() {
            // A master answers a key it owns; any other answers MOVED.
            let reply = resp(port, &["EXISTS", key]).await.unwrap_or_default();
            if reply.starts_with(':') {
                return i;
            }
        }
        panic!("no master owns {key}");
    }

    /// Any command on the master that owns `key`.
    pub async fn cmd_on_owner(&self, key: &str, args: &[&str]) -> String {
        let owner = self.owner(key).await;
        resp(self.ports[owner], args).await.expect("redis command")
    }

    /// Any command on master `i`.
    pub async fn cmd(&self, i: usize, args: &[&str]) -> String {
        resp(self.ports[i], args).await.expect("redis command")
    }

    /// Sharded subscribers of `channel` on master `i` (PUBSUB SHARDNUMSUB).
    pub async fn shard_numsub(&self, i: usize, channel: &str) -> i64 {
        let reply = resp(self.ports[i], &["PUBSUB", "SHARDNUMSUB", channel])
            .await
            .unwrap_or_default();
        last_integer(&reply)
    }

    /// Classic (cluster-wide) subscribers of `channel` seen on master `i`.
    pub async fn numsub(&self, i: usize, channel: &str) -> i64 {
        let reply = resp(self.ports[i], &["PUBSUB", "NUMSUB", channel])
            .await
            .unwrap_or_default();
        last_integer(&reply)
    }

    /// `FCALL wsgate_publish 1 gw:<room> <payload>` on the room's shard.
    pub async fn fcall_publish(&self, room: &str, payload: &str) -> Result<u64, String> {
        let channel = format!("gw:{room}");
        let reply = self
            .cmd_on_owner(&channel, &["FCALL", "wsgate_publish", "1", &channel, payload])
            .await;
        match reply.strip_prefix(':') {
            Some(n) => n.trim().parse().map_err(|_| reply.clone()),
            None => Err(reply),
        }
    }

    /// `SPUBLISH gw:<room> <payload>` on the room's shard: receivers.
    pub async fn spublish(&self, room: &str, payload: &str) -> i64 {
        let channel = format!("gw:{room}");
        last_integer(&self.cmd_on_owner(&channel, &["SPUBLISH", &channel, payload]).await)
    }

    /// Move the slot of `key` to master `to`, keys and all, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE
    /// every key, then SETSLOT NODE on every master.
    pub async fn move_slot(&self, key: &str, to: usize) {
        let from = self.owner(key).await;
        assert_ne!(from, to, "{key} is on master {to} already");
        let slot = last_integer(&self.cmd(from, &["CLUSTER", "KEYSLOT", key]).await).to_string();
        let id = |reply: String| reply.lines().nth(1).unwrap_or_default().trim().to_string();
        let from_id = id(self.cmd(from, &["CLUSTER", "MYID"]).await);
        let to_id = id(self.cmd(to, &["CLUSTER", "MYID"]).await);
        self.cmd(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])
            .await;
        self.cmd(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])
            .await;
        let keys = self.cmd(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]).await;
        let keys: Vec<&str> = keys
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .collect();
        if !keys.is_empty() {
            let port = self.ports[to].to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().copied());
            let reply = self.cmd(from, &args).await;
            assert!(reply.starts_with("+OK"), "MIGRATE: {reply}");
        }
        for i in 0..self.ports.len() {
            self.cmd(i, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).await;
        }
        wait_for("every master to agree on the slot's new owner", || async move {
            let mut agree = true;
            for &port in &self.ports {
                let reply = resp(port, &["EXISTS", key]).await.unwrap_or_default();
                let owns = reply.starts_with(':');
                agree &= owns == (port == self.ports[to]);
            }
            agree
        })
        .await;
    }

    /// SIGKILL master `i`.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill().await;
        }
    }

    /// Start master `i` again on its port, with its data and slots.
    pub async fn restart(&mut self, i: usize) {
        let child = self.spawn(i);
        self.children[i] = Some(child);
        wait_pong(self.ports[i]).await;
        self.wait_ok().await;
    }

    /// Add a replica of master `i` (`redis-cli --cluster add-node
    /// --cluster-slave`); its index among `ports`, once it is in sync.
    pub async fn add_replica(&mut self, i: usize) -> usize {
        let replica = self.start_another().await;
        let master_id = self.cmd(i, &["CLUSTER", "MYID"]).await;
        let master_id = master_id.lines().nth(1).unwrap_or_default().trim().to_string();
        redis_cli_cluster(&[
            "add-node".to_string(),
            format!("127.0.0.1:{}", self.ports[replica]),
            format!("127.0.0.1:{}", self.ports[i]),
            "--cluster-slave".to_string(),
            "--cluster-master-id".to_string(),
            master_id,
        ])
        .await;
        let port = self.ports[replica];
        wait_for("the replica to sync with its master", || async move {
            let info = resp(port, &["INFO", "replication"]).await.unwrap_or_default();
            info.contains("role:slave") && info.contains("master_link_status:up")
        })
        .await;
        self.wait_ok().await;
        replica
    }

    /// Wait until node `i` is a master serving slots (after a failover).
    pub async fn wait_master(&self, i: usize) {
        let port = self.ports[i];
        wait_for("the replica to be promoted", || async move {
            let info = resp(port, &["INFO", "replication"]).await.unwrap_or_default();
            let state = resp(port, &["CLUSTER", "INFO"]).await.unwrap_or_default();
            info.contains("role:master") && state.contains("cluster_state:ok")
        })
        .await;
    }
}

// ---------------------------------------------------------------- sentinel

/// A master, one replica and one Sentinel watching them as `mymaster`.
pub struct SentinelSet {
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
    master: Option<Child>,
    _replica: Child,
    _sentinel: Child,
}

impl SentinelSet {
    pub async fn start() -> SentinelSet {
        let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
        let master = spawn_redis(master_port, &temp_dir("sentinel-master"), &[]);
        wait_pong(master_port).await;
        let replica = spawn_redis(
            replica_port,
            &temp_dir("sentinel-replica"),
            &["--replicaof", "127.0.0.1", &master_port.to_string()],
        );
        wait_pong(replica_port).await;
        wait_for("the replica to sync", || async move {
            let info = resp(replica_port, &["INFO", "replication"]).await.unwrap_or_default();
            info.contains("master_link_status:up")
        })
        .await;
        let dir = temp_dir("sentinel");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed");
        wait_pong(sentinel_port).await;
        wait_for("the sentinel to see the replica", || async move {
            let reply = resp(sentinel_port, &["SENTINEL", "REPLICAS", "mymaster"])
                .await
                .unwrap_or_default();
            reply.contains(&replica_port.to_string())
        })
        .await;
        SentinelSet {
            master_port,
            replica_port,
            sentinel_port,
            master: Some(master),
            _replica: replica,
            _sentinel: sentinel,
        }
    }

    /// `WSGATE_REDIS_URL` in sentinel mode: the Sentinel's address.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The port the Sentinel names as master now.
    pub async fn current_master(&self) -> u16 {
        let reply = resp(self.sentinel_port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])
            .await
            .unwrap_or_default();
        reply
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL the master.
    pub async fn kill_master(&mut self) {
        if let Some(mut child) = self.master.take() {
            let _ = child.kill().await;
        }
    }
}

// ---------------------------------------------------------------- tls

/// A `redis-server` serving only TLS, with a certificate for 127.0.0.1
/// signed by a CA made for the test, and one ACL user.
pub struct TlsRedis {
    pub port: u16,
    pub ca_file: PathBuf,
    /// A CA that did not sign the server's certificate.
    pub other_ca_file: PathBuf,
    _child: Child,
}

impl TlsRedis {
    pub async fn start() -> TlsRedis {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = temp_dir("tls-redis");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server = server_params.signed_by(&server_key, &issuer).unwrap();
        let other_key = KeyPair::generate().unwrap();
        let mut other_params = CertificateParams::new(Vec::new()).unwrap();
        other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other = other_params.self_signed(&other_key).unwrap();

        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_file = write("ca.pem", ca.pem());
        let other_ca_file = write("other-ca.pem", other.pem());
        let cert = write("server.pem", server.pem());
        let key = write("server-key.pem", server_key.serialize_pem());
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--tls-auth-clients", "no"])
            // ACL: the default user is off; only `wsgate` may log in.
            .args(["--user", "default", "off"])
            .args([
                "--user",
                "wsgate",
                "on",
                &format!(">{TLS_REDIS_PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed");
        wait_for("the TLS redis-server to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        TlsRedis {
            port,
            ca_file,
            other_ca_file,
            _child: child,
        }
    }

    /// `rediss://` with the ACL user and its password.
    pub fn url(&self) -> String {
        self.url_with_password(TLS_REDIS_PASSWORD)
    }

    pub fn url_with_password(&self, password: &str) -> String {
        format!("rediss://wsgate:{password}@127.0.0.1:{}", self.port)
    }
}

/// The password of the TLS server's ACL user `wsgate`.
pub const TLS_REDIS_PASSWORD: &str = "tls-test-password";
