//! `rtap pinot-config`: writes the Apache Pinot schema and REALTIME table config of table
//! `orders` (see [`crate::pinot_config`]) into a directory.

use anyhow::Context;

use crate::cli::PinotConfigArgs;
use crate::pinot_config::{schema, table_config, Options};

pub const SCHEMA_FILE: &str = "orders_schema.json";
pub const TABLE_FILE: &str = "orders_realtime_table_config.json";

pub fn run(args: &PinotConfigArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let options = Options {
        replicas: args.replicas,
        partitions: args.partitions,
        flush_rows: args.flush_rows,
        dedup: !args.no_dedup,
    };
    let files = [
        (SCHEMA_FILE, schema()?),
        (TABLE_FILE, table_config(&config, &options)?),
    ];
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (name, value) in &files {
        let path = args.out.join(name);
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        // Written beside and renamed, so a reader never sees half a file.
        let partial = args.out.join(format!(".{name}.partial"));
        std::fs::write(&partial, text)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        super::print_out(&format!("wrote {}\n", path.display()))?;
    }
    let dir = args.out.display();
    super::print_out(&format!(
        "\nAdd them to a Pinot cluster (controller on port 9000):\n  \
         pinot-admin.sh AddTable -schemaFile {dir}/{SCHEMA_FILE} \
         -tableConfigFile {dir}/{TABLE_FILE} -controllerHost <host> -exec\n\
         or with its REST API:\n  \
         curl -X POST -H 'Content-Type: application/json' -d @{dir}/{SCHEMA_FILE} http://<host>:9000/schemas\n  \
         curl -X POST -H 'Content-Type: application/json' -d @{dir}/{TABLE_FILE} http://<host>:9000/tables\n\
         (README, Scale-out).\n"
    ))
}
