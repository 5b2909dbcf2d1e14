//! IoT Edge deployment: every manifest in `deployment-manifests/` against the deployment schema's
//! rules and the runtime's (edgeAgent, API proxy), `iot-edge manifest` field for field, the
//! files equal to what the command prints, and `modules/connected-registry/module.json`.

mod common;

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use regex::Regex;
use serde_json::{json, Map, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TWIN_CHUNK_MAX: usize = 512;
const PASSWORD: &str = "Pa55+w/rd=";

fn manifests_dir() -> PathBuf {
    Path::new(ROOT).join("deployment-manifests")
}

fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(common::BIN);
    cmd.args(["iot-edge", "manifest"]).args(args);
    common::run_bounded(&mut cmd, Duration::from_secs(30))
}

/// Runs the command expecting success; its stdout parsed, and its stderr.
fn manifest(args: &[&str]) -> (Value, String) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}"));
    (v, stderr)
}

/// Runs the command expecting one clear error line, nothing on stdout, a non-zero exit.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should have failed");
    assert!(out.stdout.is_empty(), "{args:?} printed a manifest");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr}");
    assert!(
        lines[0].starts_with("connected-registry: error: "),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "password leaked: {stderr}");
    stderr
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("{e}"))
}

fn obj<'a>(v: &'a Value, what: &str) -> &'a Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"))
}

/// Every key of `o` is allowed and every required key is there.
fn keys(o: &Map<String, Value>, what: &str, allowed: &[&str], required: &[&str]) {
    for k in o.keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}: key '{k}' not allowed"
        );
    }
    for k in required {
        assert!(o.contains_key(*k), "{what}: '{k}' missing");
    }
}

fn one_of(v: &Value, what: &str, allowed: &[&str]) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what} not a string"));
    assert!(allowed.contains(&s), "{what} = '{s}' not in {allowed:?}");
}

/// edgeAgent substitutes `$upstream` only when `:` and a port follow it.
fn upstream_ok(s: &str) -> bool {
    s.matches("$upstream").count() == re(r"\$upstream:[1-9]").find_iter(s).count()
}

/// Checks a module's `settings` and returns its createOptions, chunks joined and parsed.
fn settings(v: &Value, what: &str) -> Option<Value> {
    let s = obj(v, what);
    let chunk_key = re("^(createoptions|createOptions)[0-9]*$");
    for k in s.keys() {
        assert!(k == "image" || chunk_key.is_match(k), "{what}: key '{k}'");
    }
    let image = s["image"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: image"));
    assert!(
        upstream_ok(image),
        "{what}: '{image}' has $upstream without a port"
    );
    let mut joined = String::new();
    let mut count = 0;
    for i in 0.. {
        let key = if i == 0 {
            "createOptions".to_owned()
        } else {
            format!("createOptions{i:02}")
        };
        let Some(chunk) = s.get(&key) else { break };
        let chunk = chunk
            .as_str()
            .unwrap_or_else(|| panic!("{what}.{key} not a string"));
        assert!(
            chunk.chars().count() <= TWIN_CHUNK_MAX,
            "{what}.{key} too long"
        );
        joined.push_str(chunk);
        count += 1;
    }
    let chunks = s.keys().filter(|k| chunk_key.is_match(k)).count();
    assert_eq!(
        count, chunks,
        "{what}: createOptions chunks out of sequence"
    );
    (count > 0).then(|| {
        let create: Value = serde_json::from_str(&joined)
            .unwrap_or_else(|e| panic!("{what}: createOptions not JSON: {e}"));
        assert!(create.is_object(), "{what}: createOptions not an object");
        create
    })
}

fn env(v: &Value, what: &str) {
    let name = re(r"^[^+#$\s.]+$");
    for (k, e) in obj(v, what) {
        assert!(name.is_match(k), "{what}: variable name '{k}'");
        keys(obj(e, what), what, &["value"], &["value"]);
        let value = &e["value"];
        assert!(value.is_string() || value.is_number() || value.is_boolean());
    }
}

/// A user module under the 1.1 schema; returns its createOptions.
fn module(name: &str, m: &Value) -> Option<Value> {
    assert!(
        re("^[a-zA-Z0-9_-]+$").is_match(name),
        "module name '{name}'"
    );
    let allowed = [
        "env",
        "imagePullPolicy",
        "restartPolicy",
        "settings",
        "startupOrder",
        "status",
        "type",
        "version",
    ];
    let required = ["type", "status", "restartPolicy", "settings"];
    keys(obj(m, name), name, &allowed, &required);
    common_fields(name, m)
}

fn common_fields(name: &str, m: &Value) -> Option<Value> {
    assert_eq!(m["type"], "docker", "{name}");
    if !m["status"].is_null() {
        one_of(&m["status"], name, &["running", "stopped"]);
    }
    if !m["restartPolicy"].is_null() {
        let policies = ["never", "on-failure", "on-unhealthy", "always"];
        one_of(&m["restartPolicy"], name, &policies);
    }
    if !m["imagePullPolicy"].is_null() {
        one_of(&m["imagePullPolicy"], name, &["never", "on-create"]);
    }
    if !m["startupOrder"].is_null() {
        let order = m["startupOrder"].as_u64();
        assert!(order.is_some_and(|o| o <= u64::from(u32::MAX)), "{name}");
    }
    if !m["version"].is_null() {
        assert!(m["version"].is_string(), "{name}: version");
    }
    if !m["env"].is_null() {
        env(&m["env"], name);
    }
    settings(&m["settings"], name)
}

fn credentials(v: &Value) {
    let name = re(r"^[^.$# ]+$");
    for (k, c) in obj(v, "registryCredentials") {
        assert!(name.is_match(k), "credential name '{k}'");
        let fields = ["username", "password", "address"];
        keys(obj(c, k), k, &fields, &fields);
        assert!(fields.iter().all(|f| c[*f].is_string()), "{k}");
        let address = c["address"].as_str().unwrap_or_default();
        assert!(
            re(r"^[^\s]+$").is_match(address),
            "{k}: address '{address}'"
        );
        assert!(
            upstream_ok(address),
            "{k}: '{address}' has $upstream without a port"
        );
    }
}

fn runtime(v: &Value) {
    keys(
        obj(v, "runtime"),
        "runtime",
        &["type", "settings"],
        &["type", "settings"],
    );
    assert_eq!(v["type"], "docker");
    let allowed = ["minDockerVersion", "loggingOptions", "registryCredentials"];
    keys(
        obj(&v["settings"], "runtime.settings"),
        "runtime.settings",
        &allowed,
        &[],
    );
    assert!(v["settings"]["minDockerVersion"].is_string());
    credentials(&v["settings"]["registryCredentials"]);
}

fn system_modules(v: &Value) {
    let both = ["edgeAgent", "edgeHub"];
    keys(obj(v, "systemModules"), "systemModules", &both, &both);
    let agent = &v["edgeAgent"];
    let allowed = ["type", "settings", "env", "imagePullPolicy"];
    keys(
        obj(agent, "edgeAgent"),
        "edgeAgent",
        &allowed,
        &["type", "settings"],
    );
    common_fields("edgeAgent", agent);
    let hub = &v["edgeHub"];
    let allowed = [
        "type",
        "settings",
        "env",
        "status",
        "restartPolicy",
        "imagePullPolicy",
        "startupOrder",
    ];
    let required = ["type", "settings", "status", "restartPolicy"];
    keys(obj(hub, "edgeHub"), "edgeHub", &allowed, &required);
    let create = common_fields("edgeHub", hub).unwrap_or_else(|| panic!("edgeHub ports"));
    for port in ["443/tcp", "5671/tcp", "8883/tcp"] {
        assert!(
            create["HostConfig"]["PortBindings"][port].is_array(),
            "{port}"
        );
    }
}

fn edge_hub(v: &Value) {
    let allowed = ["schemaVersion", "routes", "storeAndForwardConfiguration"];
    keys(obj(v, "$edgeHub"), "$edgeHub", &allowed, &allowed);
    assert!(v["schemaVersion"].is_string());
    let routes = obj(&v["routes"], "routes");
    assert!(routes
        .values()
        .any(|r| r == "FROM /messages/* INTO $upstream"));
    let ttl = &v["storeAndForwardConfiguration"]["timeToLiveSecs"];
    assert_eq!(ttl.as_u64(), Some(7200));
}

/// The name and entry of the one module whose env has `variable`.
fn module_with<'a>(modules: &'a Map<String, Value>, variable: &str) -> (&'a str, &'a Value) {
    let found: Vec<_> = modules
        .iter()
        .filter(|(_, m)| !m["env"][variable].is_null())
        .collect();
    assert_eq!(found.len(), 1, "modules with {variable}");
    (found[0].0.as_str(), found[0].1)
}

/// The registry and its API proxy are wired the way the proxy's template needs.
fn registry_and_proxy(modules: &Map<String, Value>) {
    let (registry, reg) = module_with(modules, "ACR_REGISTRY_CONNECTION_STRING");
    let (proxy_name, proxy) = module_with(modules, "CONNECTED_ACR_ROUTE_ADDRESS");
    assert_eq!(proxy["env"]["NGINX_DEFAULT_PORT"]["value"], "8000");
    let route = &proxy["env"]["CONNECTED_ACR_ROUTE_ADDRESS"]["value"];
    assert_eq!(route, &json!(format!("{registry}:8080")));
    assert!(
        proxy["env"]["NGINX_CONFIG_ENV_VAR_LIST"].is_null(),
        "obsolete variable"
    );
    let order = |m: &Value| m["startupOrder"].as_u64().unwrap_or(u64::from(u32::MAX));
    assert!(
        order(reg) < order(proxy),
        "the registry must start before the proxy"
    );
    let create = module(registry, reg).unwrap_or_else(|| panic!("registry createOptions"));
    let binds = create["HostConfig"]["Binds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let data = binds.iter().filter_map(Value::as_str);
    assert!(
        data.clone().any(|b| b.ends_with(":/var/acr/data")),
        "{binds:?}"
    );
    let create = module(proxy_name, proxy).unwrap_or_else(|| panic!("proxy createOptions"));
    assert!(create["HostConfig"]["PortBindings"]["8000/tcp"].is_array());
}

/// A nested layer pulls everything through `$upstream:8000` with its sync token and syncs
/// with `$IOTEDGE_PARENTHOSTNAME:8000` over https.
fn nested_rules(desired: &Value) {
    let modules = obj(&desired["modules"], "modules");
    let (_, reg) = module_with(modules, "ACR_REGISTRY_CONNECTION_STRING");
    let cs = reg["env"]["ACR_REGISTRY_CONNECTION_STRING"]["value"]
        .as_str()
        .unwrap_or_default();
    assert!(
        cs.contains("ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME:8000;"),
        "{cs}"
    );
    assert!(cs.contains("ParentEndpointProtocol=https"), "{cs}");
    let system = desired["systemModules"].as_object().into_iter().flatten();
    for (name, m) in modules.iter().chain(system) {
        let image = m["settings"]["image"].as_str().unwrap_or_default();
        assert!(image.starts_with("$upstream:8000/"), "{name}: {image}");
    }
    let creds = obj(
        &desired["runtime"]["settings"]["registryCredentials"],
        "creds",
    );
    let upstream = creds.values().find(|c| c["address"] == "$upstream:8000");
    let token = re("SyncTokenName=([^;]*)")
        .captures(cs)
        .map(|c| c[1].to_owned());
    let user = upstream.map(|c| c["username"].clone());
    assert_eq!(user, token.map(Value::String), "pull with the sync token");
}

/// The deployment structure and this project's rules for one manifest.
fn check_deployment(what: &str, v: &Value) {
    let content = obj(&v["modulesContent"], what);
    let twin = re("^[a-zA-Z0-9_-]+$");
    for k in content.keys() {
        assert!(
            k == "$edgeAgent" || k == "$edgeHub" || twin.is_match(k),
            "{what}: {k}"
        );
    }
    let agent = obj(&content["$edgeAgent"], "$edgeAgent");
    keys(
        agent,
        "$edgeAgent",
        &["properties.desired"],
        &["properties.desired"],
    );
    let desired = &agent["properties.desired"];
    let sections = ["schemaVersion", "runtime", "systemModules", "modules"];
    keys(obj(desired, "desired"), what, &sections, &sections);
    assert_eq!(desired["schemaVersion"], "1.1", "{what}");
    runtime(&desired["runtime"]);
    system_modules(&desired["systemModules"]);
    let modules = obj(&desired["modules"], "modules");
    for (name, m) in modules {
        module(name, m);
    }
    registry_and_proxy(modules);
    let hub = obj(&content["$edgeHub"], "$edgeHub");
    keys(
        hub,
        "$edgeHub",
        &["properties.desired"],
        &["properties.desired"],
    );
    edge_hub(&hub["properties.desired"]);
    let agent_image = desired["systemModules"]["edgeAgent"]["settings"]["image"].as_str();
    if agent_image.is_some_and(|i| i.starts_with("$upstream")) {
        nested_rules(desired);
    }
}

fn json_files() -> Vec<PathBuf> {
    let entries = std::fs::read_dir(manifests_dir()).unwrap_or_else(|e| panic!("{e}"));
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_manifest_is_a_valid_deployment() {
    let files = json_files();
    assert!(files.len() >= 3, "{files:?}");
    let mut nested = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        check_deployment(&f.display().to_string(), &v);
        nested += usize::from(text.contains("\"$upstream:8000/azureiotedge-agent"));
    }
    assert!(
        nested >= 1 && nested < files.len(),
        "both layers are covered"
    );
}

/// Replaces every module's createOptions chunks by the parsed, joined object (the form
/// `expected` writes), so manifests compare field for field whatever the chunking and the key
/// order inside the string.
fn normalized(mut v: Value) -> Value {
    let desired = &mut v["modulesContent"]["$edgeAgent"]["properties.desired"];
    for section in ["systemModules", "modules"] {
        let Some(modules) = desired[section].as_object_mut() else {
            continue;
        };
        for m in modules.values_mut() {
            let create = settings(&m["settings"], "module");
            let Some(s) = m["settings"].as_object_mut() else {
                continue;
            };
            s.retain(|k, _| k == "image");
            if let Some(create) = create {
                s.insert("createOptions".into(), create);
            }
        }
    }
    v
}

fn connection_string(endpoint: &str) -> String {
    format!(
        "ConnectedRegistryName=site;SyncTokenName=site-sync;SyncTokenPassword={PASSWORD};\
         ParentGatewayEndpoint={endpoint};ParentEndpointProtocol=https"
    )
}

/// Arguments of `iot-edge manifest`: layer, image, connection string, then `extra`.
fn args<'a>(layer: &'a str, image: &'a str, cs: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--layer",
        layer,
        "--image",
        image,
        "--connection-string",
        cs,
    ];
    all.extend_from_slice(extra);
    all
}

/// The manifest the command should print, written out independently of its code.
fn expected(images: [&str; 4], cs: &str, binds: &[&str], creds: Value) -> Value {
    let [agent, hub, registry, proxy] = images;
    let ports = |ports: &[&str]| {
        let map: Map<String, Value> = ports
            .iter()
            .map(|p| (format!("{p}/tcp"), json!([{ "HostPort": p }])))
            .collect();
        json!({ "HostConfig": { "PortBindings": map } })
    };
    json!({ "modulesContent": {
        "$edgeAgent": { "properties.desired": {
            "schemaVersion": "1.1",
            "runtime": { "type": "docker", "settings": {
                "minDockerVersion": "v1.25", "registryCredentials": creds } },
            "systemModules": {
                "edgeAgent": { "type": "docker", "settings": { "image": agent },
                    "env": { "SendRuntimeQualityTelemetry": { "value": "false" } } },
                "edgeHub": { "type": "docker", "status": "running", "restartPolicy": "always",
                    "settings": { "image": hub, "createOptions": ports(&["443", "5671", "8883"]) } },
            },
            "modules": {
                "connected-registry": {
                    "type": "docker", "version": "1.0", "status": "running",
                    "restartPolicy": "always", "startupOrder": 1,
                    "settings": { "image": registry,
                        "createOptions": { "HostConfig": { "Binds": binds } } },
                    "env": { "ACR_REGISTRY_CONNECTION_STRING": { "value": cs } },
                },
                "IoTEdgeAPIProxy": {
                    "type": "docker", "version": "1.0", "status": "running",
                    "restartPolicy": "always", "startupOrder": 2,
                    "settings": { "image": proxy, "createOptions": ports(&["8000"]) },
                    "env": {
                        "NGINX_DEFAULT_PORT": { "value": "8000" },
                        "CONNECTED_ACR_ROUTE_ADDRESS": { "value": "connected-registry:8080" },
                    },
                },
            },
        } },
        "$edgeHub": { "properties.desired": {
            "schemaVersion": "1.1",
            "routes": { "upstream": "FROM /messages/* INTO $upstream" },
            "storeAndForwardConfiguration": { "timeToLiveSecs": 7200 },
        } },
    } })
}

#[test]
fn top_layer_manifest_is_filled_field_for_field() {
    let cs = connection_string("myregistry.westeurope.data.azurecr.io");
    let creds = format!("myregistry.azurecr.io,puller,{PASSWORD}");
    let image = "myregistry.azurecr.io/connected-registry:0.1.0";
    let extra = [
        "--data-dir",
        "/srv/registry",
        "--registry-credentials",
        &creds,
    ];
    let (v, stderr) = manifest(&args("top", image, &cs, &extra));
    assert!(stderr.is_empty(), "{stderr}");
    let images = [
        "mcr.microsoft.com/azureiotedge-agent:1.5",
        "mcr.microsoft.com/azureiotedge-hub:1.5",
        image,
        "mcr.microsoft.com/azureiotedge-api-proxy:1.1",
    ];
    let creds = json!({ "myregistry-azurecr-io": {
        "address": "myregistry.azurecr.io", "username": "puller", "password": PASSWORD } });
    let want = expected(images, &cs, &["/srv/registry:/var/acr/data"], creds);
    check_deployment("top", &v);
    assert_eq!(normalized(v), want);
}

#[test]
fn nested_layer_manifest_is_filled_field_for_field() {
    let cs = connection_string("$IOTEDGE_PARENTHOSTNAME:8000");
    let image = "$upstream:8000/connected-registry:0.1.0";
    let proxy = "$upstream:8000/edge/api-proxy:1.1";
    let extra = [
        "--proxy-image",
        proxy,
        "--registry-credentials",
        "$upstream:8443,other,pw",
    ];
    let (v, stderr) = manifest(&args("nested", image, &cs, &extra));
    assert!(stderr.is_empty(), "{stderr}");
    let images = [
        "$upstream:8000/azureiotedge-agent:1.5",
        "$upstream:8000/azureiotedge-hub:1.5",
        image,
        proxy,
    ];
    // The sync token logs in to the parent without being asked for (the documented setup).
    let creds = json!({
        "upstream-8000": { "address": "$upstream:8000", "username": "site-sync", "password": PASSWORD },
        "upstream-8443": { "address": "$upstream:8443", "username": "other", "password": "pw" },
    });
    let want = expected(
        images,
        &cs,
        &["/var/lib/connected-registry:/var/acr/data"],
        creds,
    );
    check_deployment("nested", &v);
    assert_eq!(normalized(v), want);
}

#[test]
fn long_create_options_are_split_into_twin_chunks() {
    let dir = format!("/{}", "long-directory-name/".repeat(40));
    let cs = connection_string("parent.example:443");
    let extra = ["--data-dir", &dir, "--parent-ca", "/etc/ssl/parent.pem"];
    let (v, _) = manifest(&args("top", "r.example/cr:1", &cs, &extra));
    check_deployment("long", &v);
    let m = &v["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"];
    let s = &m["connected-registry"]["settings"];
    assert!(s["createOptions01"].is_string(), "not split: {s}");
    let create = settings(s, "registry").unwrap_or_else(|| panic!("no createOptions"));
    let want = json!({ "HostConfig": { "Binds": [
        format!("{dir}:/var/acr/data"),
        "/etc/ssl/parent.pem:/etc/connected-registry/parent-ca.pem:ro",
    ] } });
    assert_eq!(create, want);
    let ca = &m["connected-registry"]["env"]["CONNECTED_REGISTRY_PARENT_CA"]["value"];
    assert_eq!(ca, "/etc/connected-registry/parent-ca.pem");
}

#[test]
fn bad_inputs_fail_with_one_clear_line() {
    let nested_cs = connection_string("$IOTEDGE_PARENTHOSTNAME:8000");
    let http_cs = nested_cs.replace("https", "http");
    let top_cs = connection_string("parent.example");
    let bad_cs = format!("Color=blue;SyncTokenPassword={PASSWORD}");
    let up = "$upstream:8000/connected-registry:0.1.0";
    let no_port = "$upstream/connected-registry:0.1.0";
    let no_port_creds = format!("$upstream,u,{PASSWORD}");
    let short_creds = format!("host,{PASSWORD}");
    let cases = [
        (args("middle", "r/cr:1", &top_cs, &[]), "layer"),
        (args("top", "r/cr:1", &bad_cs, &[]), "Color"),
        (args("nested", no_port, &nested_cs, &[]), "$upstream"),
        (
            args(
                "nested",
                up,
                &nested_cs,
                &["--registry-credentials", &no_port_creds],
            ),
            "port",
        ),
        (args("top", up, &top_cs, &[]), "top layer"),
        (args("top", "r/cr:1", &nested_cs, &[]), "top layer"),
        (args("nested", up, &http_cs, &[]), "https"),
        (
            args(
                "top",
                "r/cr:1",
                &top_cs,
                &["--registry-credentials", &short_creds],
            ),
            "HOST,USER,PASSWORD",
        ),
        (
            args("top", "r/cr:1", &top_cs, &["--data-dir", "data"]),
            "absolute",
        ),
    ];
    for (args, says) in cases {
        let err = fails(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn doubtful_nested_inputs_warn_without_the_password() {
    let cs = connection_string("10.0.0.4:8000");
    let (v, stderr) = manifest(&args("nested", "$upstream:8000/cr:1", &cs, &[]));
    assert!(
        stderr.starts_with("connected-registry: warning: "),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(v["modulesContent"].is_object());
}

/// The commands of the README's `sh` block: arguments (single quotes stripped) and the file
/// each writes with `>`.
fn documented_commands() -> Vec<(Vec<String>, String)> {
    let readme = std::fs::read_to_string(manifests_dir().join("README.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("no sh block in deployment-manifests/README.md"));
    let token = re(r"'([^']*)'|(\S+)");
    let mut commands = Vec::new();
    for command in block
        .replace("\\\n", " ")
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let words: Vec<String> = token
            .captures_iter(command)
            .filter_map(|c| c.get(1).or(c.get(2)).map(|m| m.as_str().to_owned()))
            .collect();
        assert_eq!(
            words[..3],
            ["connected-registry", "iot-edge", "manifest"],
            "{command}"
        );
        let at = words
            .iter()
            .position(|w| w == ">")
            .unwrap_or_else(|| panic!("{command}"));
        assert_eq!(at + 2, words.len(), "{command}");
        commands.push((words[3..at].to_vec(), words[at + 1].clone()));
    }
    commands
}

#[test]
fn files_equal_the_documented_commands_output() {
    let commands = documented_commands();
    let mut written = BTreeSet::new();
    for (args, file) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = manifests_dir().join(file);
        let have = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(
            have == out.stdout,
            "deployment-manifests/{file} differs from the command's output: regenerate it \
             as deployment-manifests/README.md says"
        );
        written.insert(file.clone());
    }
    let files: BTreeSet<String> = json_files()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        files, written,
        "every manifest comes from a documented command"
    );
}

/// `path` joined onto `base` with `.` and `..` resolved, without touching the disk.
fn lexical(base: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn module_json_builds_from_the_repository_root() {
    let root = Path::new(ROOT);
    let dir = root.join("modules/connected-registry");
    let text = std::fs::read_to_string(dir.join("module.json")).unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["$schema-version"], "0.0.1");
    assert!(v["description"].is_string());
    assert!(v["language"].is_string(), "iotedgedev reads language");
    let image = &v["image"];
    let repo = image["repository"].as_str().unwrap_or_default();
    assert!(repo.ends_with("/connected-registry"), "{repo}");
    assert_eq!(image["tag"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(image["buildOptions"].is_array());
    let context = image["contextPath"].as_str().unwrap_or_default();
    assert_eq!(lexical(&dir, context), lexical(root, "."), "contextPath");
    let platforms = obj(&image["tag"]["platforms"], "platforms");
    for (platform, file) in [
        ("amd64", "Dockerfile.amd64"),
        ("arm64v8", "Dockerfile.arm64v8"),
    ] {
        let path = platforms[platform].as_str().unwrap_or_default();
        assert_eq!(lexical(&dir, path), root.join(file), "{platform}");
    }
}
