"""What a run tells people: the run summary, report files, the HTML summary and its charts."""
