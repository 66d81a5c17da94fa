//! `ringcast-load`: drives WebSocket servers (issue: the load generator). Not built yet.

fn main() {
    eprintln!("ringcast-load: not implemented yet; see the load generator issue");
    std::process::exit(2);
}
