use serde_json::Value;

use super::checks::upstream_has_port;
use super::credentials::key;
use super::*;

const SECRET: &str = "s3cr3t,with=comma";

fn cs(endpoint: &str, protocol: &str) -> String {
    format!(
        "ConnectedRegistryName=site;SyncTokenName=site-sync;SyncTokenPassword={SECRET};\
         ParentGatewayEndpoint={endpoint};ParentEndpointProtocol={protocol}"
    )
}

fn inputs(layer: Layer, image: &str, connection_string: String) -> ManifestInputs {
    ManifestInputs {
        layer,
        image: image.to_owned(),
        connection_string,
        proxy_image: None,
        data_dir: DEFAULT_HOST_DATA_DIR.to_owned(),
        credentials: Vec::new(),
        parent_ca: None,
    }
}

fn top() -> ManifestInputs {
    inputs(
        Layer::Top,
        "reg.azurecr.io/connected-registry:0.1.0",
        cs("reg.westeurope.data.azurecr.io", "https"),
    )
}

fn nested() -> ManifestInputs {
    inputs(
        Layer::Nested,
        "$upstream:8000/connected-registry:0.1.0",
        cs("$IOTEDGE_PARENTHOSTNAME:8000", "https"),
    )
}

fn desired(m: &Manifest) -> &Value {
    &m.json["modulesContent"]["$edgeAgent"]["properties.desired"]
}

/// The createOptions chunks of a settings object, joined in key order.
fn joined(settings: &Value) -> String {
    (0..)
        .map(chunk_key)
        .map_while(|k| settings.get(&k).and_then(Value::as_str))
        .collect()
}

fn err(i: &ManifestInputs) -> String {
    match build(i) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn split_keeps_chunks_within_the_twin_limit() {
    let text = "a".repeat(1200);
    let chunks = split(&text);
    let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
    assert_eq!(lens, [512, 512, 176]);
    assert_eq!(chunks.concat(), text);
    // A character outside the BMP is two .NET characters and is never cut.
    let wide = "😀".repeat(300);
    let chunks = split(&wide);
    assert!(chunks.iter().all(|c| c.encode_utf16().count() <= CHUNK_MAX));
    assert_eq!(chunks.concat(), wide);
    assert_eq!(split("{}"), ["{}"]);
    assert_eq!(
        [chunk_key(0), chunk_key(1), chunk_key(12)],
        ["createOptions", "createOptions01", "createOptions12"]
    );
}

#[test]
fn upstream_needs_a_port_like_edge_agent() {
    assert!(upstream_has_port("$upstream:8000/azureiotedge-agent:1.5"));
    assert!(upstream_has_port("plain.example/image:1"));
    assert!(!upstream_has_port("$upstream/acr/connected-registry:0.3.0"));
    assert!(!upstream_has_port("$upstream"));
    assert!(!upstream_has_port("$upstream:0/x"));
    assert!(!upstream_has_port("$upstream:8000/x/$upstream"));
}

#[test]
fn credential_keys_fit_the_schema() {
    assert_eq!(key("myregistry.azurecr.io"), "myregistry-azurecr-io");
    assert_eq!(key("$upstream:8000"), "upstream-8000");
    assert_eq!(key("<REPLACE>.azurecr.io"), "replace-azurecr-io");
    assert_eq!(key("..."), "registry");
}

#[test]
fn credentials_parse_and_hide_the_password() {
    let c: RegistryCredential = "reg.example:5000,bob,pa,ss"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (c.address.as_str(), c.username.as_str(), c.password.as_str()),
        ("reg.example:5000", "bob", "pa,ss")
    );
    assert!(!format!("{c:?}").contains("pa,ss"));
    for bad in ["reg", "reg,bob", "reg,,pw", ",bob,pw", "reg,bob,"] {
        assert!(bad.parse::<RegistryCredential>().is_err(), "{bad}");
    }
}

#[test]
fn layers_parse() {
    assert_eq!("top".parse::<Layer>().ok(), Some(Layer::Top));
    assert_eq!("nested".parse::<Layer>().ok(), Some(Layer::Nested));
    assert!("middle".parse::<Layer>().is_err());
}

#[test]
fn top_layer_wires_registry_and_proxy() {
    let m = build(&top()).unwrap_or_else(|e| panic!("{e}"));
    assert!(m.warnings.is_empty());
    let d = desired(&m);
    let reg = &d["modules"][REGISTRY_MODULE];
    let proxy = &d["modules"][PROXY_MODULE];
    assert_eq!(
        joined(&reg["settings"]),
        r#"{"HostConfig":{"Binds":["/var/lib/connected-registry:/var/acr/data"]}}"#
    );
    assert_eq!(
        reg["env"]["ACR_REGISTRY_CONNECTION_STRING"]["value"],
        top().connection_string
    );
    assert_eq!(
        proxy["env"]["CONNECTED_ACR_ROUTE_ADDRESS"]["value"],
        "connected-registry:8080"
    );
    assert!(reg["startupOrder"].as_u64() < proxy["startupOrder"].as_u64());
    assert_eq!(
        proxy["settings"]["image"],
        "mcr.microsoft.com/azureiotedge-api-proxy:1.1"
    );
    assert_eq!(
        d["runtime"]["settings"]["registryCredentials"],
        Value::Object(Default::default())
    );
    let hub = &m.json["modulesContent"]["$edgeHub"]["properties.desired"];
    assert_eq!(hub["storeAndForwardConfiguration"]["timeToLiveSecs"], 7200);
}

#[test]
fn nested_layer_pulls_from_the_parent_with_the_sync_token() {
    let m = build(&nested()).unwrap_or_else(|e| panic!("{e}"));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let d = desired(&m);
    let creds = &d["runtime"]["settings"]["registryCredentials"];
    assert_eq!(creds["upstream-8000"]["address"], "$upstream:8000");
    assert_eq!(creds["upstream-8000"]["username"], "site-sync");
    assert_eq!(creds["upstream-8000"]["password"], SECRET);
    let agent = &d["systemModules"]["edgeAgent"]["settings"]["image"];
    assert_eq!(agent, "$upstream:8000/azureiotedge-agent:1.5");
    let mut given = nested();
    given.credentials = vec![RegistryCredential {
        address: "$upstream:8000".into(),
        username: "puller".into(),
        password: "pw".into(),
    }];
    let m = build(&given).unwrap_or_else(|e| panic!("{e}"));
    let creds = &desired(&m)["runtime"]["settings"]["registryCredentials"];
    assert_eq!(creds.as_object().map(|o| o.len()), Some(1));
    assert_eq!(creds["upstream-8000"]["username"], "puller");
}

#[test]
fn long_create_options_are_chunked() {
    let mut i = top();
    i.data_dir = format!("/{}", "d".repeat(700));
    i.parent_ca = Some("/etc/ssl/parent.pem".into());
    let m = build(&i).unwrap_or_else(|e| panic!("{e}"));
    let reg = &desired(&m)["modules"][REGISTRY_MODULE];
    assert!(reg["settings"]["createOptions01"].is_string());
    assert!(reg["settings"]["createOptions02"].is_null());
    let create: Value =
        serde_json::from_str(&joined(&reg["settings"])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        create["HostConfig"]["Binds"][0],
        format!("{}:/var/acr/data", i.data_dir)
    );
    assert_eq!(
        create["HostConfig"]["Binds"][1],
        "/etc/ssl/parent.pem:/etc/connected-registry/parent-ca.pem:ro"
    );
    assert_eq!(
        reg["env"]["CONNECTED_REGISTRY_PARENT_CA"]["value"],
        PARENT_CA_IN_CONTAINER
    );
    i.data_dir = format!("/{}", "d".repeat(60_000));
    assert!(err(&i).contains("createOptions"));
}

#[test]
fn inputs_the_runtime_would_misread_are_refused() {
    let mut i = top();
    i.connection_string = cs("$IOTEDGE_PARENTHOSTNAME:8000", "https");
    assert!(err(&i).contains("top layer"));
    let mut i = top();
    i.image = "$upstream:8000/connected-registry:0.1.0".into();
    assert!(err(&i).contains("top layer"));
    let mut i = nested();
    i.connection_string = cs("$IOTEDGE_PARENTHOSTNAME:8000", "http");
    assert!(err(&i).contains("https"));
    i.connection_string = cs("$IOTEDGE_PARENTHOSTNAME", "https");
    assert!(err(&i).contains("443"));
    let mut i = nested();
    i.image = "$upstream/connected-registry:0.1.0".into();
    assert!(err(&i).contains("port"));
    let mut i = nested();
    i.proxy_image = Some("$upstream/azureiotedge-api-proxy:1.1".into());
    assert!(err(&i).contains("proxy image"));
    let mut i = nested();
    i.credentials = vec![RegistryCredential {
        address: "$upstream".into(),
        username: "u".into(),
        password: SECRET.into(),
    }];
    assert!(!err(&i).contains(SECRET));
    for dir in ["relative/dir", "/a:b", ""] {
        let mut i = top();
        i.data_dir = dir.into();
        assert!(err(&i).contains("absolute"), "{dir}");
    }
    let mut i = top();
    i.connection_string = cs("h", "https").replace("SyncTokenName", "Color");
    let e = err(&i);
    assert!(e.contains("Color") && !e.contains(SECRET), "{e}");
}

#[test]
fn doubtful_nested_inputs_warn() {
    let mut i = nested();
    i.connection_string = cs("10.0.0.4:8000", "https");
    i.image = "myregistry.azurecr.io/connected-registry:0.1.0".into();
    let m = build(&i).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
    assert!(m.warnings.contains(&Warning::FixedParentEndpoint));
    i.connection_string = cs("$IOTEDGE_PARENTHOSTNAME:443", "https");
    let m = build(&i).unwrap_or_else(|e| panic!("{e}"));
    assert!(m.warnings.contains(&Warning::ParentPort("443".into())));
    assert!(m.warnings.iter().all(|w| !w.to_string().contains(SECRET)));
}
