//! Values from files: a [`DataTable`] (CSV with a header row; connection `n` takes row
//! `n % rows`, so 10 000 connections can share 100 accounts) and [`Samples`] (one message
//! body per line: chat lines, JSON documents), picked at random per message.

use std::path::Path;

/// The most rows or sample lines read: a data file is for values, not for gigabytes.
const MAX_ROWS: usize = 10_000_000;

/// A CSV file: a header row naming the columns, then one row per record. Fields are
/// separated by commas; a field in double quotes may hold commas, and `""` for a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataTable {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl DataTable {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<DataTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("data file {}: {e}", path.display()))?;
        DataTable::parse(&text).map_err(|e| format!("data file {}: {e}", path.display()))
    }

    /// Parses CSV text.
    pub fn parse(text: &str) -> Result<DataTable, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or("no header row")?;
        let columns = fields(header).map_err(|e| format!("line 1: {e}"))?;
        if let Some(bad) = columns.iter().find(|c| !is_name(c)) {
            return Err(format!(
                "column {bad:?}: names are letters, digits and '_' (used as {{NAME}})"
            ));
        }
        let mut rows = Vec::new();
        for (i, line) in lines {
            if rows.len() == MAX_ROWS {
                return Err(format!("more than {MAX_ROWS} rows"));
            }
            let row = fields(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            if row.len() != columns.len() {
                return Err(format!(
                    "line {}: {} fields, the header has {}",
                    i + 1,
                    row.len(),
                    columns.len()
                ));
            }
            rows.push(row);
        }
        if rows.is_empty() {
            return Err("no row after the header".into());
        }
        Ok(DataTable { columns, rows })
    }

    /// The column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The value of `column` for connection `n`: row `n % rows`.
    pub fn value(&self, n: u64, column: usize) -> &str {
        let row = &self.rows[(n % self.rows.len() as u64) as usize];
        &row[column]
    }
}

/// Whether `name` can be a placeholder's name.
fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The fields of one CSV line.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".into()),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => out.push(field),
                Some(c) => return Err(format!("{c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field.trim_end_matches('\r').to_owned());
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            out.push(field);
        }
    }
}

/// Message bodies, one per line of a file (empty lines left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Samples {
    lines: Vec<Box<str>>,
}

impl Samples {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Samples, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("samples file {}: {e}", path.display()))?;
        Samples::parse(&text).map_err(|e| format!("samples file {}: {e}", path.display()))
    }

    /// One sample per non-empty line of `text`.
    pub fn parse(text: &str) -> Result<Samples, String> {
        let lines: Vec<Box<str>> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(MAX_ROWS)
            .map(Into::into)
            .collect();
        if lines.is_empty() {
            return Err("no line in it".into());
        }
        Ok(Samples { lines })
    }

    /// A line chosen at random.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> &str {
        &self.lines[rng.usize(..self.lines.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_taken_in_turn_by_connection_number() {
        let table = DataTable::parse("user,room\r\nann,a\r\nbob,b\r\n").unwrap();
        assert_eq!(table.columns(), ["user", "room"]);
        assert_eq!(table.value(0, 0), "ann");
        assert_eq!(table.value(1, 1), "b");
        assert_eq!(table.value(2, 0), "ann");
    }

    #[test]
    fn quoted_fields_keep_commas_and_quotes() {
        assert_eq!(
            fields(r#"a,"b,c","say ""hi""",,"#).unwrap(),
            ["a", "b,c", "say \"hi\"", "", ""]
        );
    }

    #[test]
    fn bad_tables_say_where() {
        assert!(DataTable::parse("").unwrap_err().contains("header"));
        assert!(DataTable::parse("a,b\n1\n").unwrap_err().contains("line 2"));
        assert!(DataTable::parse("a\n\"x\n").unwrap_err().contains("quoted"));
        assert!(DataTable::parse("a b\n1\n").unwrap_err().contains("names"));
        assert!(DataTable::parse("a\n").unwrap_err().contains("no row"));
    }

    #[test]
    fn samples_skip_empty_lines() {
        let samples = Samples::parse("hello\n\n{\"a\":1}\n").unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20 {
            assert!(["hello", "{\"a\":1}"].contains(&samples.pick(&mut rng)));
        }
        assert!(Samples::parse("\n \n").is_err());
    }
}
