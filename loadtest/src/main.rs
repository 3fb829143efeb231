//! wsgate-loadtest: the load generator (scenarios arrive with issue 4).
fn main() {
    eprintln!("wsgate-loadtest: no scenario implemented yet");
    std::process::exit(2);
}
