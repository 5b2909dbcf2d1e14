//! `connected-registry iot-edge manifest`: prints a filled IoT Edge deployment manifest, so
//! nobody edits `<REPLACE_WITH_…>` placeholders by hand.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use connected_registry::edge::manifest::{
    self, ManifestError, ManifestInputs, RegistryCredential, DEFAULT_HOST_DATA_DIR,
};

use super::fail;

/// `iot-edge` subcommands.
#[derive(Subcommand, Debug)]
pub enum EdgeCmd {
    /// Print the deployment manifest of one layer (JSON on stdout), for
    /// `az iot edge set-modules --content`.
    Manifest(ManifestArgs),
}

/// Prints the deployment manifest of one layer: the registry, the API proxy, edgeAgent, edgeHub.
#[derive(Args)]
pub struct ManifestArgs {
    /// `top` (the parent is ACR, any OCI registry or a connected-registry outside IoT Edge) or
    /// `nested` (the parent is the IoT Edge layer above, reached through its API proxy).
    #[arg(long, value_name = "top|nested")]
    layer: String,
    /// The connected-registry image; on a nested layer `$upstream:8000/<repository>:<tag>`.
    #[arg(long, value_name = "REF")]
    image: String,
    /// The registry's ACR_REGISTRY_CONNECTION_STRING; on a nested layer
    /// `…;ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME:8000;ParentEndpointProtocol=https`.
    #[arg(long, value_name = "CS")]
    connection_string: String,
    /// The API proxy image [default: mcr.microsoft.com/azureiotedge-api-proxy:1.1 on top,
    /// $upstream:8000/azureiotedge-api-proxy:1.1 nested].
    #[arg(long, value_name = "REF")]
    proxy_image: Option<String>,
    /// Host directory for the registry's data, bound to /var/acr/data.
    #[arg(long, value_name = "HOSTPATH", default_value = DEFAULT_HOST_DATA_DIR)]
    data_dir: String,
    /// A registry edgeAgent pulls images from: HOST,USER,PASSWORD (repeatable). A nested layer
    /// always logs in to $upstream:8000 with its sync token, unless this names that address.
    #[arg(long = "registry-credentials", value_name = "HOST,USER,PASSWORD")]
    registry_credentials: Vec<String>,
    /// CA certificate (PEM) on the host that the registry trusts for its parent's HTTPS.
    #[arg(long, value_name = "HOSTPATH")]
    parent_ca: Option<String>,
}

impl fmt::Debug for ManifestArgs {
    // The connection string and credentials hold passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestArgs")
            .field("layer", &self.layer)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// Runs an `iot-edge` subcommand.
pub fn run(cmd: EdgeCmd) -> ExitCode {
    match cmd {
        EdgeCmd::Manifest(args) => print_manifest(args),
    }
}

/// Builds the manifest; warnings go to stderr, the manifest alone to stdout.
fn print_manifest(args: ManifestArgs) -> ExitCode {
    let built = inputs(args)
        .and_then(|i| manifest::build(&i))
        .and_then(|m| Ok((m.to_pretty()?, m.warnings)));
    let (text, warnings) = match built {
        Ok(done) => done,
        Err(e) => return fail(&e.to_string()),
    };
    for w in warnings {
        eprintln!("connected-registry: warning: {w}");
    }
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("cannot write the manifest: {e}")),
    }
}

fn inputs(args: ManifestArgs) -> Result<ManifestInputs, ManifestError> {
    let credentials = args
        .registry_credentials
        .iter()
        .map(|c| c.parse::<RegistryCredential>())
        .collect::<Result<_, _>>()?;
    Ok(ManifestInputs {
        layer: args.layer.parse()?,
        image: args.image,
        connection_string: args.connection_string,
        proxy_image: args.proxy_image,
        data_dir: args.data_dir,
        credentials,
        parent_ca: args.parent_ca,
    })
}
