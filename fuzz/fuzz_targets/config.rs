//! The config loader on any text: a config or an error, never a panic, and every
//! problem an error lists points inside the text and is rendered with its
//! `file:line:column`.

#![no_main]

use libfuzzer_sys::fuzz_target;

const FILE_NAME: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    // The loader reads files as strict UTF-8 and refuses anything else before
    // parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(error) = weir::config::parse(text, FILE_NAME) else {
        return;
    };
    let rendered = error.to_string();
    let problems = error.problems();
    assert!(
        !problems.is_empty(),
        "an error without a problem: {rendered}"
    );

    // `str::lines` would miss the empty line after a final newline, which an
    // error at the end of the text points to.
    let lines: Vec<&str> = text.split('\n').collect();
    for problem in problems {
        assert_eq!(problem.file, FILE_NAME);
        assert!(
            (1..=lines.len()).contains(&problem.line),
            "line {} of {}: {problem}",
            problem.line,
            lines.len()
        );
        // Columns count characters; one past the last is the end of the line.
        let line_chars = lines[problem.line - 1].chars().count();
        assert!(
            (1..=line_chars + 1).contains(&problem.column),
            "column {} of a {line_chars}-character line: {problem}",
            problem.column
        );
        let position = format!("{FILE_NAME}:{}:{}: ", problem.line, problem.column);
        assert!(
            rendered.contains(&position),
            "{position} missing from {rendered:?}"
        );
    }
});
